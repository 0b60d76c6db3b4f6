"""vLLM's flag names a user types first work on megasnow.serve: `--model` (the api_server form), `--max-model-len`
(a shorter context than the model's: longer requests get vLLM's 400), `--uvicorn-log-level`; both model forms at
once, neither, or a --max-model-len past the model's context is one `error:` line, exit 2."""
import subprocess
import sys

import httpx
import openai
import pytest

from megasnow.generation.tiny_model import write_tiny_checkpoint
from megasnow.serve.process import ServerProcess


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    write_tiny_checkpoint(str(out), seed=1)  # max_seq_len 1024
    return str(out)


def test_model_flag_and_max_model_len(tiny):
    srv = ServerProcess(tiny, "--served-model-name", "tiny", "--max-model-len", "64", "--uvicorn-log-level", "error",
                        "--threads", "1")
    assert srv.cmd[3] == tiny
    srv.cmd[3:4] = ["--model", tiny]  # vLLM's `python -m vllm.entrypoints.openai.api_server --model X`
    with srv.start():
        assert "(max_model_len 64," in srv.stdout_lines[0]
        assert httpx.get(srv.base_url + "/models", timeout=30).json()["data"][0]["max_model_len"] == 64
        c = openai.OpenAI(base_url=srv.base_url, api_key="unused", max_retries=0)
        assert c.completions.create(model="tiny", prompt="def f():", max_tokens=8).usage.completion_tokens <= 8
        with pytest.raises(openai.BadRequestError, match="This model's maximum context length is 64 tokens"):
            c.completions.create(model="tiny", prompt="def f():", max_tokens=70)


def test_model_flag_errors(tiny, tmp_path):
    for args, line in [([tiny, "--model", tiny], f"error: the model given twice ({tiny} and --model {tiny}): give one "
                                                 f"(see python -m megasnow.serve --help)"),
                       ([], "error: the following arguments are required: CHECKPOINT_OR_HF_DIR (or --model) "
                            "(see python -m megasnow.serve --help)"),
                       ([tiny, "--max-model-len", "0"], "error: --max-model-len must be >= 1, got 0 "
                                                        "(see python -m megasnow.serve --help)")]:
        res = subprocess.run([sys.executable, "-m", "megasnow.serve", *args, "--port", "0"], capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 2 and res.stderr == line + "\n", res.stderr
    res = subprocess.run([sys.executable, "-m", "megasnow.serve", "--model", tiny, "--max-model-len", "5000",
                          "--port", "0", "--threads", "1"], capture_output=True, text=True, timeout=180)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines()[-1] == (f"error: --max-model-len 5000 exceeds the context of {tiny} "
                                                   f"(max_seq_len 1024): give at most 1024, or leave it out")
