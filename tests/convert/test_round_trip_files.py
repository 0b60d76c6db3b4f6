"""What an import and an export write besides the weights: a non-empty --output is refused (nothing changed) unless
--overwrite; tokenizer_config/chat template/generation_config survive checkpoint -> HF -> checkpoint; the HF
folder's special tokens agree everywhere (transformers reads them back); every file and folder honours the umask."""
import json
import os
import subprocess
import sys

import pytest

from megasnow.convert import hf_llama
from megasnow.convert.errors import ConversionError
from megasnow.generation.local import LocalBackend, LocalEngine
from megasnow.generation.model_files import read_tokenizer_files
from megasnow.generation.protocol import GenerationRequest, SamplingParams
from megasnow.generation.tiny_model import IM_END, IM_START
from tests.convert.test_convert_hf_llama import REPO
from tests.utils.test_file_modes import _modes as modes

TOOL = os.path.join(REPO, "tools", "convert_checkpoint.py")
CHAT = [{"role": "user", "content": "Write a function that adds two numbers."}]


def tool(*argv):
    return subprocess.run([sys.executable, TOOL, *map(str, argv)], capture_output=True, text=True, timeout=300)


def snapshot(root):
    """{relative path: bytes (files) or None (folders)} of everything under root."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            out[os.path.relpath(os.path.join(folder, name), root)] = None
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                out[os.path.relpath(os.path.join(folder, name), root)] = f.read()
    return out


def trained_run(root):
    """A copy of a trained run's checkpoint folder: step_00000006 with `latest` pointing at it."""
    step = root / "step_00000006"
    step.mkdir(parents=True)
    (step / "meta.json").write_text('{"step": 6}')
    (step / "model_tp00_pp000.pt").write_bytes(b"trained weights")
    (root / "latest").write_text("step_00000006\n")
    return root


def files_of(path):
    f = read_tokenizer_files(path)
    return f.eos_ids, f.add_bos, f.bos_id, f.special_tokens, f.chat_template


@pytest.mark.parametrize("case", ["import-hf", "import-gguf", "export", "other-files"])
def test_a_non_empty_output_is_refused_and_left_as_it_was(tmp_path, tiny, tiny_hf, case):
    if case == "export":
        out = tmp_path / "hf"
        # an earlier export with other options, served from there (the same one would be "nothing to do")
        tool("export", "--checkpoint", tiny, "--output", out, "--dtype", "bfloat16")
        argv, holds = ["export", "--checkpoint", tiny, "--output", out], "a HuggingFace model, config.json"
        what = "HF model"
    else:
        out = trained_run(tmp_path / "run")
        holds, what = "a megasnow checkpoint, latest step_00000006", "checkpoint"
        if case == "import-gguf":
            gguf = tmp_path / "m.gguf"
            gguf.write_bytes(b"GGUF" + bytes(12))  # a header is all that is read before the check
            argv = ["import", "--gguf", gguf, "--output", out]
        else:
            argv = ["import", "--hf", tiny_hf, "--output", out]
        if case == "other-files":
            out = tmp_path / "notes"
            out.mkdir()
            for name in ("a.txt", "b.txt", "c.txt", "d.txt"):
                (out / name).write_text(name)
            argv[-1], holds = out, "a.txt, b.txt, c.txt, ... (4 entries)"
    before, beside = snapshot(out), sorted(os.listdir(out.parent))
    res = tool(*argv)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        f"error: --output {out} is not empty: it holds {holds}; nothing was changed. Give a new or empty folder, or "
        f"pass --overwrite to delete everything in it and write the {what} there"]
    assert snapshot(out) == before
    assert sorted(os.listdir(out.parent)) == beside  # no temporary folder beside it


def test_overwrite_replaces_the_folder_whole(tmp_path, tiny, tiny_hf):
    run = trained_run(tmp_path / "run")
    res = tool("import", "--hf", tiny_hf, "--output", run, "--overwrite")
    assert res.returncode == 0, res.stderr
    assert sorted(os.listdir(run)) == ["latest", "step_00000000"]  # the trained steps are gone with their latest
    assert (run / "latest").read_text() == "step_00000000\n"
    # an export over an earlier one leaves no stale file of it
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "model.safetensors.index.json").write_text("{}")
    res = tool("export", "--checkpoint", run, "--output", hf, "--overwrite")
    assert res.returncode == 0, res.stderr
    assert "model.safetensors.index.json" not in os.listdir(hf)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    # --overwrite never deletes its own source
    res = tool("export", "--checkpoint", run / "step_00000000", "--output", run, "--overwrite")
    assert res.returncode == 2 and "--overwrite would delete the source" in res.stderr
    assert (run / "latest").exists()


def test_api_refuses_a_non_empty_output_and_a_failure_leaves_nothing(tmp_path, tiny, tiny_hf):
    run = trained_run(tmp_path / "run")
    before = snapshot(run)
    with pytest.raises(ConversionError, match="is not empty: it holds a megasnow checkpoint.*overwrite=True"):
        hf_llama.import_from_hf(tiny_hf, str(run))
    with pytest.raises(ConversionError, match="is not empty"):
        hf_llama.export_to_hf(tiny, str(run))
    assert snapshot(run) == before
    # a tokenizer_config.json naming a token the vocabulary lacks fails half-way through the export
    bad = tmp_path / "badtok"
    bad.mkdir()
    (bad / "tokenizer.json").write_bytes(open(os.path.join(tiny_hf, "tokenizer.json"), "rb").read())
    (bad / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|no_such_token|>"}))
    with pytest.raises(ConversionError, match="eos_token '<|no_such_token|>' is not in the tokenizer's vocabulary"):
        hf_llama.export_to_hf(tiny, str(tmp_path / "out"), tokenizer=str(bad / "tokenizer.json"))
    assert sorted(os.listdir(tmp_path)) == ["badtok", "run"]  # neither the output nor a temporary folder


def test_hf_round_trip_keeps_the_generation_files(tmp_path, tiny, tiny_hf):
    """checkpoint -> HF -> checkpoint -> HF: the same EOS ids, BOS rule, special tokens and chat template at every
    stop, the same text through LocalEngine."""
    back = tmp_path / "back"
    res = tool("import", "--hf", tiny_hf, "--output", back)
    assert res.returncode == 0, res.stderr
    step = back / "step_00000000"
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"} <= \
        set(os.listdir(step))
    again = tmp_path / "hf2"
    hf_llama.export_to_hf(str(back), str(again))
    source = files_of(os.path.join(tiny, "step_00000000"))
    assert source[4] and IM_START in source[4]  # the tiny model's ChatML template
    assert source[3]["eos_token"] == IM_END and len(source[0]) == 2  # <|endoftext|> and <|im_end|>
    for folder in (tiny_hf, str(step), str(again)):
        assert files_of(folder) == source, folder
    for name in ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "config.json"):
        assert (again / name).read_text() == open(os.path.join(tiny_hf, name)).read(), name
    requests = [GenerationRequest(id="c", messages=CHAT, params=SamplingParams(max_tokens=12)),
                GenerationRequest(id="p", prompt="def add(a, b):\n", params=SamplingParams(max_tokens=12))]
    texts = [[r.choices[0].text for r in LocalBackend(LocalEngine.from_path(p)).generate(requests)]
             for p in (tiny, str(back))]
    assert texts[0] == texts[1] and all(texts[0])


def test_import_without_generation_config_takes_config_json_ids(tmp_path, tiny_hf):
    hf = tmp_path / "hf"
    hf.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        os.link(os.path.join(tiny_hf, name), hf / name)
    config = json.loads((hf / "config.json").read_text())
    summary = hf_llama.import_from_hf(str(hf), str(tmp_path / "back"))
    gen = json.loads(open(os.path.join(summary["out"], "generation_config.json")).read())
    assert gen == {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    assert set(read_tokenizer_files(summary["out"]).eos_ids) >= set(config["eos_token_id"])


def test_export_special_tokens_agree_in_transformers(tiny, tiny_hf):
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(tiny_hf)
    source = read_tokenizer_files(os.path.join(tiny, "step_00000000"))
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (IM_START, IM_END, "<pad>")
    ids = (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    assert ids == tuple(source.tokenizer.token_to_id(t) for t in (IM_START, IM_END, "<pad>"))
    config = AutoConfig.from_pretrained(tiny_hf)
    gen = GenerationConfig.from_pretrained(tiny_hf)
    assert (config.bos_token_id, config.pad_token_id) == (gen.bos_token_id, gen.pad_token_id) == (ids[0], ids[2])
    assert ids[1] in config.eos_token_id and config.eos_token_id == gen.eos_token_id  # [eod, im_end]
    special = json.loads(open(os.path.join(tiny_hf, "special_tokens_map.json")).read())
    assert (special["bos_token"], special["eos_token"], special["pad_token"]) == (IM_START, IM_END, "<pad>")


def wrong_modes(root, umask):
    return {p: oct(m) for p, m in modes(root).items()
            if m != (0o777 if os.path.isdir(os.path.join(root, p)) else 0o666) & ~umask}


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_every_written_file_honours_the_umask(tmp_path, tiny, umask):
    old = os.umask(umask)
    try:
        hf_llama.export_to_hf(tiny, str(tmp_path / "hf"))
        hf_llama.import_from_hf(str(tmp_path / "hf"), str(tmp_path / "back"))
    finally:
        os.umask(old)
    assert "model.safetensors" in modes(tmp_path / "hf") and "step_00000000/model_tp00_pp000.pt" in modes(
        tmp_path / "back")
    assert wrong_modes(tmp_path, umask) == {}


def test_import_stores_a_tokenizer_given_under_any_name(tmp_path, tiny_hf):
    mine = tmp_path / "tok"
    mine.mkdir()
    (mine / "code.json").write_bytes(open(os.path.join(tiny_hf, "tokenizer.json"), "rb").read())
    summary = hf_llama.import_from_hf(tiny_hf, str(tmp_path / "back"), tokenizer=str(mine / "code.json"))
    assert sorted(os.listdir(summary["out"])) == ["generation_config.json", "meta.json", "model_tp00_pp000.pt",
                                                  "tokenizer.json"]  # no tokenizer_config.json beside code.json
    assert open(os.path.join(summary["out"], "tokenizer.json"), "rb").read() == (mine / "code.json").read_bytes()


def test_a_chat_template_jinja_file_travels_both_ways(tmp_path, tiny_hf):
    """transformers' save_pretrained now writes the template to chat_template.jinja, not tokenizer_config.json."""
    hf = tmp_path / "hf"
    hf.mkdir()
    for name in os.listdir(tiny_hf):
        os.link(os.path.join(tiny_hf, name), hf / name)
    config = json.loads((hf / "tokenizer_config.json").read_text())
    template = config.pop("chat_template")
    os.unlink(hf / "tokenizer_config.json")
    (hf / "tokenizer_config.json").write_text(json.dumps(config))
    (hf / "chat_template.jinja").write_text(template)
    back = hf_llama.import_from_hf(str(hf), str(tmp_path / "back"))["out"]
    again = tmp_path / "hf2"
    hf_llama.export_to_hf(str(tmp_path / "back"), str(again))
    for folder in (back, str(again)):
        assert open(os.path.join(folder, "chat_template.jinja")).read() == template
        assert read_tokenizer_files(folder).chat_template == template
