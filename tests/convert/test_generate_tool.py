"""tools/generate.py: completions from a checkpoint and from its HF export agree, and equal
megasnow.model.generate called directly with the engine's prompt ids and EOS ids."""
import importlib.util
import json
import os

import pytest

from megasnow.convert import hf_llama
from megasnow.generation.local import LocalEngine
from megasnow.model.config import get_preset
from megasnow.model.generate import generate
from tests.convert.test_convert_hf_llama import REPO, save_model_checkpoint, sp_model  # noqa: F401 (fixture)


def load_tool():
    spec = importlib.util.spec_from_file_location("generate_tool", os.path.join(REPO, "tools", "generate.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generate_tool_checkpoint_hf_and_cache_agree(tmp_path, sp_model):  # noqa: F811
    model = save_model_checkpoint(tmp_path, get_preset("tiny", vocab_size=600), seed=11, tokenizer=sp_model).eval()
    hf_llama.export_to_hf(str(tmp_path / "ckpt"), str(tmp_path / "hf"))
    tool = load_tool()
    prompts = ["def add(a, b):\n", "import json\n\nclass Encoder:"]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    results = {}
    for name, args in {"ckpt": ["--checkpoint", str(tmp_path / "ckpt")],
                       "hf": ["--hf", str(tmp_path / "hf")]}.items():
        out = tmp_path / f"{name}.jsonl"
        assert tool.main(args + ["--prompts-file", str(tmp_path / "p.jsonl"), "--max-new-tokens", "12",
                                 "--device", "cpu", "--output", str(out)]) == 0
        results[name] = [json.loads(l) for l in out.read_text().splitlines()]
    assert results["ckpt"] == results["hf"]
    engine = LocalEngine.from_path(str(tmp_path / "ckpt"))
    tok = engine.tokenizer
    direct = generate(model, [engine.encode(p) for p in prompts], 12, stop_ids=engine.eos_ids)
    assert [r["tokens"] for r in results["ckpt"]] == direct
    assert [r["completion"] for r in results["ckpt"]] == [tok.decode(d) for d in direct]
    assert all(len(r["tokens"]) > 0 for r in results["ckpt"])


def test_generate_tool_needs_a_prompt(tmp_path):
    with pytest.raises(SystemExit):
        load_tool().main(["--checkpoint", str(tmp_path)])
