"""A vLLM user's first steps on megasnow.serve, on a real server process (tiny model, random port): vLLM's --dtype
names, the model served under the path as given (vLLM's id) besides the folder's name, JSON bodies whatever their
Content-Type, one wording per max_tokens rule, and the messages for a GGUF file, a HF folder without safetensors and
an address that cannot be bound."""
import json
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from megasnow.generation.tiny_model import write_tiny_checkpoint
from megasnow.serve.cli_args import DTYPES, check_args, make_parser
from megasnow.serve.process import ServerProcess

MODEL_ARG = "ckpt/smol"  # relative, as a user types it: vLLM serves it under this id


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm_user")
    write_tiny_checkpoint(str(root / MODEL_ARG), seed=1)
    return root


@pytest.fixture(scope="module")
def server(workdir):
    proc = ServerProcess(MODEL_ARG, "--dtype", "half", "--threads", "1", cwd=workdir).start()
    yield proc
    assert proc.stop(signal.SIGINT) == 130


def post(server, route, body, **kw):
    return httpx.post(server.base_url + route, timeout=60, **({"json": body} if body is not None else {}), **kw)


def error(status, message, param, code=None):
    return status, {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def test_dtype_takes_vllms_names():
    parser = make_parser()
    for name, torch_name in [("half", "float16"), ("float16", "float16"), ("float", "float32"),
                             ("float32", "float32"), ("bfloat16", "bfloat16"), ("auto", None)]:
        assert DTYPES[check_args(parser, parser.parse_args(["m", "--dtype", name])).dtype] == torch_name
    res = subprocess.run([sys.executable, "-m", "megasnow.serve", "m", "--dtype", "double"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.startswith("error: argument --dtype: invalid choice: 'double'")


def test_served_under_the_path_as_given_and_the_folder_name(server):
    """/v1/models lists the folder's name (megasnow's id, as before); the path as given (vLLM's id) is accepted."""
    assert "serving 'smol' (also as 'ckpt/smol') (max_model_len 1024," in server.stdout_lines[0]  # --dtype half
    ids = [m["id"] for m in httpx.get(server.base_url + "/models", timeout=30).json()["data"]]
    assert ids == ["smol"]
    body = {"prompt": "def f(", "max_tokens": 4, "temperature": 0}
    texts = {}
    for name in ("smol", MODEL_ARG):
        r = post(server, "/completions", {**body, "model": name})
        assert r.status_code == 200 and r.json()["model"] == name  # a response names the id it was asked for
        texts[name] = r.json()["choices"][0]["text"]
        assert httpx.get(f"{server.base_url}/models/{name}", timeout=30).json()["id"] == name
    assert texts["smol"] == texts[MODEL_ARG] and texts["smol"]


def test_an_unknown_model_names_param_model_on_every_route(server):
    r = httpx.get(server.base_url + "/models/foo", timeout=30)
    assert (r.status_code, r.json()) == error(404, "The model `foo` does not exist.", "model", "model_not_found")
    r = post(server, "/completions", {"model": "foo", "prompt": "x", "max_tokens": 1})
    assert (r.status_code, r.json()) == error(404, "The model `foo` does not exist; this server serves 'smol'",
                                              "model", "model_not_found")


def test_a_json_body_is_read_whatever_its_content_type(server):
    body = {"model": "smol", "prompt": "class A:", "max_tokens": 4, "temperature": 0}
    data = json.dumps(body).encode()
    expected = post(server, "/completions", body).json()["choices"][0]["text"]
    # no Content-Type (FastAPI >= 0.115 would hand the route bytes), curl -d's form type, text/plain
    for headers in ({}, {"content-type": "application/x-www-form-urlencoded"}, {"content-type": "text/plain"}):
        r = httpx.post(server.base_url + "/completions", content=data, headers=headers, timeout=60)
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == expected, (headers, r.text)
    # a body that is not JSON says so, naming the type it came with
    r = httpx.post(server.base_url + "/completions", content=b"model=smol&prompt=x", timeout=60,
                   headers={"content-type": "application/x-www-form-urlencoded"})
    assert (r.status_code, r.json()) == error(400, "The request body is not valid JSON: Expecting value: line 1 "
                                                   "column 1 (char 0) (it came with Content-Type: "
                                                   "application/x-www-form-urlencoded; this server reads every body as "
                                                   "JSON)", None)


def test_max_tokens_one_message_per_rule(server):
    completions = "max_tokens must be >= 1 (or 0 with echo: true, to score the prompt only), got {}"
    for route, extra, field, value, message in [
            ("/completions", {}, "max_tokens", -1, completions.format(-1)),
            ("/completions", {}, "max_tokens", 0, completions.format(0)),
            ("/completions", {"echo": True}, "max_tokens", -1,
             "max_tokens must be >= 0 with echo: true (0 scores the prompt only), got -1"),
            ("/chat/completions", {}, "max_tokens", 0, "max_tokens must be >= 1, got 0"),
            ("/chat/completions", {}, "max_tokens", -1, "max_tokens must be >= 1, got -1"),
            ("/chat/completions", {}, "max_completion_tokens", 0, "max_completion_tokens must be >= 1, got 0")]:
        base = {"prompt": "x"} if route == "/completions" else {"messages": [{"role": "user", "content": "x"}]}
        r = post(server, route, {"model": "smol", **base, **extra, field: value})
        assert (r.status_code, r.json()) == error(400, message, field), (route, extra, field, value)
    r = post(server, "/completions", {"model": "smol", "prompt": "x", "max_tokens": 0, "echo": True})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == "x"


def run_cli(*args, cwd=None):
    res = subprocess.run([sys.executable, "-m", "megasnow.serve", *map(str, args)], capture_output=True, text=True,
                         timeout=120, cwd=cwd)
    return res.returncode, res.stderr


def test_model_files_that_need_a_conversion_name_it(tmp_path):
    gguf = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")
    assert run_cli(gguf) == (2, f"error: {gguf}: a GGUF file is not loaded directly; import it once into a megasnow "
                                f"checkpoint (fp32, keeps its tokenizer and chat template), then use that folder: "
                                f"python tools/convert_checkpoint.py import --gguf {gguf} --output "
                                f"ckpt/SmolLM2-135M-Instruct.Q4_1 && python -m megasnow.serve "
                                f"ckpt/SmolLM2-135M-Instruct.Q4_1\n")
    assert run_cli(tmp_path) == (2, f"error: {tmp_path}: a folder holding GGUF file(s) ({gguf.name}), not a "
                                    f"checkpoint; import one once into a megasnow checkpoint, then use that folder: "
                                    f"python tools/convert_checkpoint.py import --gguf {gguf} --output DIR\n")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (hf / "pytorch_model.bin").write_bytes(b"")
    assert run_cli(hf) == (2, f"error: {hf}: a HF folder (config.json) without model.safetensors (it has "
                              f"pytorch_model.bin, which is not read); save it with transformers' save_pretrained(..., "
                              f"safe_serialization=True), then use it as is or import it (python "
                              f"tools/convert_checkpoint.py import --hf {hf} --output DIR)\n")


def test_an_address_that_cannot_be_bound_names_host_and_a_clash_names_port(workdir):
    rc, err = run_cli(MODEL_ARG, "--host", "999.1.1.1", cwd=workdir)
    assert rc == 2 and err.startswith("error: --host 999.1.1.1: cannot listen on this address (") and err.endswith(
        "); give an address of this machine: 127.0.0.1 (this machine only), 0.0.0.0 (every interface), ::1 / :: "
        "for IPv6, or a host name that resolves to one\n") and err.count("\n") == 1, err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc, err = run_cli(MODEL_ARG, "--port", port, cwd=workdir)
    assert (rc, err) == (2, f"error: --port {port}: already in use on 127.0.0.1 (Address already in use); pick "
                            f"another port or --port 0\n")
