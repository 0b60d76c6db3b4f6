"""tools/generate.py under the CLI rule: bad sampling flags, an empty or too-long --prompt -> `error:` and exit 2,
nothing written; in a --prompts-file each bad line is reported as FILE:LINE and skipped while the others are
answered exactly as megasnow.model.generate answers them."""
import importlib.util
import json
import os

import pytest
import torch

from megasnow.generation.local import LocalEngine
from megasnow.model.config import get_preset
from megasnow.model.generate import SequenceSpec, generate, generate_sequences
from megasnow.utils.cli import run_tool
from tests.convert.test_convert_hf_llama import REPO, save_model_checkpoint, sp_model  # noqa: F401 (fixture)

MAX_SEQ_LEN = 48


def load_tool():
    spec = importlib.util.spec_from_file_location("generate_tool", os.path.join(REPO, "tools", "generate.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, sp_model):  # noqa: F811
    root = tmp_path_factory.mktemp("gen")
    save_model_checkpoint(root, get_preset("tiny", vocab_size=600, max_seq_len=MAX_SEQ_LEN), seed=3, tokenizer=sp_model)
    return str(root / "ckpt")


def errors(capsys):
    return capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("flags,named", [
    (["--top-p", "0"], "--top-p"),
    (["--top-p", "1.5"], "--top-p"),
    (["--max-new-tokens", "-1"], "--max-new-tokens"),
    (["--temperature", "-0.5"], "--temperature"),
    (["--batch-size", "0"], "--batch-size"),
    (["--top-k", "-2"], "--top-k"),
    (["--min-p", "1.5"], "--min-p"),
    (["--min-new-tokens", "-1"], "--min-new-tokens"),
    (["--min-new-tokens", "9", "--max-new-tokens", "8"], "--min-new-tokens"),
    (["--prompt", ""], "--prompt is empty"),
    (["--prompt", "a", "--prompt", ""], "--prompt 2 is empty"),
    (["--prompt", "a", "--prompt", "b", "--suffix", "x"], "--suffix given 1 time for 2 --prompt: each --suffix "
                                                          "belongs to the --prompt of the same position"),
    (["--device", "gpu0"], "--device 'gpu0' is not a torch device"),
    pytest.param(["--device", "cuda"], "--device is cuda but this machine has no CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")),
])
def test_bad_flags_are_one_error_line_before_any_model_loads(tmp_path, capsys, flags, named):
    out = tmp_path / "out.jsonl"
    args = ["--checkpoint", str(tmp_path), "--output", str(out)] + (["--prompt", "x"] if "--prompt" not in flags else [])
    assert run_tool(load_tool().main, args + flags) == 2
    lines = errors(capsys)
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], lines
    assert not out.exists()


def test_too_long_prompt_is_an_error_naming_the_context(checkpoint, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    long_prompt = "def f(x):\n    return x\n" * 40
    assert run_tool(load_tool().main, ["--checkpoint", checkpoint, "--prompt", "ok", "--prompt", long_prompt,
                                       "--max-new-tokens", "8", "--device", "cpu", "--output", str(out)]) == 2
    lines = errors(capsys)
    assert len(lines) == 1 and lines[0].startswith("error: --prompt 2 is ") and f"context of {MAX_SEQ_LEN}" in lines[0]
    assert not out.exists()


def test_bad_lines_of_a_prompts_file_are_reported_and_skipped(checkpoint, tmp_path, capsys):
    tool = load_tool()
    good = ["def add(a, b):\n", "import json\n"]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join([
        json.dumps({"prompt": good[0]}),                         # 1
        "{not json",                                              # 2
        json.dumps({"text": "no prompt field"}),                  # 3
        json.dumps({"prompt": ""}),                               # 4
        json.dumps({"prompt": "x = 1\n" * 60}),                   # 5: too long for the context
        json.dumps({"prompt": good[1]}),                          # 6
    ]) + "\n")
    out = tmp_path / "out.jsonl"
    assert run_tool(tool.main, ["--checkpoint", checkpoint, "--prompts-file", str(prompts), "--max-new-tokens", "6",
                                "--device", "cpu", "--output", str(out)]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning: ")]
    assert sorted(int(w.split(f"{prompts}:")[1].split(":")[0]) for w in warnings) == [2, 3, 4, 5], warnings
    assert "wrote 2 completions" in captured.out and "4 prompts skipped" in captured.out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == good
    engine = LocalEngine.from_path(checkpoint)
    direct = generate(engine.model, [engine.encode(p) for p in good], 6, stop_ids=engine.eos_ids)
    assert [r["tokens"] for r in rows] == direct


def test_a_prompts_file_with_no_usable_line_is_an_error(checkpoint, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": ""}) + "\n{broken\n")
    out = tmp_path / "out.jsonl"
    assert run_tool(load_tool().main, ["--checkpoint", checkpoint, "--prompts-file", str(prompts),
                                       "--output", str(out)]) == 2
    lines = errors(capsys)
    assert lines[-1].startswith("error: no usable prompt in ") and str(prompts) in lines[-1]
    assert sum(line.startswith("warning: ") for line in lines) == 2 and not out.exists()


def test_min_new_tokens_keeps_the_stop_ids_out_of_the_first_tokens(checkpoint, tmp_path):
    """--min-new-tokens (SamplingParams.min_tokens, SequenceSpec.min_new_tokens; HF's min_new_tokens): no stop id
    is sampled before that many tokens, so a showcase completion is never empty (the quickstart's samples were);
    other rows of the batch are untouched and the stop ids end a row again afterwards."""
    engine = LocalEngine.from_path(checkpoint)
    ids = tuple(engine.encode("def add(a, b):\n"))
    half = frozenset(range(0, engine.model.cfg.vocab_size, 2))  # every even id stops a row
    free = [SequenceSpec(ids, 8, 1.0, 1.0, seed, half) for seed in range(8)]
    held = [SequenceSpec(ids, 8, 1.0, 1.0, seed, half, min_new_tokens=4) for seed in range(8)]
    out = generate_sequences(engine.model, free + held, engine.tokenizer)
    assert sum(q.tokens == [] for q in out[:8]) >= 2  # without it: stops at once
    for q in out[8:]:
        assert len(q.tokens) >= 4 and all(t % 2 == 1 for t in q.tokens), q.tokens
        assert q.finish_reason == ("length" if len(q.tokens) == 8 else "stop")
    assert any(q.finish_reason == "stop" for q in out[8:])  # a stop id ends the row once the minimum is met
    alone = generate_sequences(engine.model, free, engine.tokenizer)
    assert [q.tokens for q in alone] == [q.tokens for q in out[:8]]  # the other rows sample exactly as alone

    tool = load_tool()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "def add(a, b):\n"}) + "\n")
    out_file = tmp_path / "out.jsonl"
    assert run_tool(tool.main, ["--checkpoint", checkpoint, "--prompts-file", str(prompts), "--max-new-tokens", "6",
                                "--min-new-tokens", "6", "--temperature", "0.7", "--seed", "1", "--device", "cpu",
                                "--output", str(out_file)]) == 0
    (row,) = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(row["tokens"]) == 6 and not set(row["tokens"]) & engine.eos_ids and row["finish_reason"] == "length"


def test_suffix_asks_for_the_middle_in_the_trained_layout(tmp_path, capsys):
    """--suffix (and a 'suffix' field of --prompts-file) is fill-in-the-middle: the output equals the generator run
    on LocalEngine's FIM prompt with the FIM stops, in PSM or --fim-format spm; a tokenizer without FIM tokens is
    one error line naming the prompt."""
    from megasnow.generation.tiny_model import write_tiny_checkpoint

    tiny = write_tiny_checkpoint(str(tmp_path / "tiny"), seed=5)
    prefix, suffix = "def area(w, h):\n    return ", "\n\nprint(area(2, 3))\n"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": prefix, "suffix": suffix}) + "\n" + json.dumps({"prompt": prefix}) + "\n"
                       + json.dumps({"prompt": prefix, "suffix": 3}) + "\n")
    engine = LocalEngine.from_path(tiny)
    middles = {}
    for fmt in ("psm", "spm"):
        out = tmp_path / f"{fmt}.jsonl"
        assert run_tool(load_tool().main, ["--checkpoint", tiny, "--prompts-file", str(prompts), "--max-new-tokens",
                                           "10", "--fim-format", fmt, "--output", str(out)]) == 0
        assert "not a string (int); skipped" in capsys.readouterr().err
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r.get("suffix") for r in rows] == [suffix, None]
        fim = generate_sequences(engine.model, [SequenceSpec(engine.fim_prompt_ids(prefix, suffix, fmt=fmt), 10,
                                                             stop_ids=engine.fim_stop_ids())], engine.tokenizer)[0]
        plain = generate(engine.model, [engine.encode(prefix)], 10, stop_ids=engine.eos_ids)[0]
        assert (rows[0]["tokens"], rows[0]["completion"], rows[1]["tokens"]) == (fim.tokens, fim.text, plain)
        middles[fmt] = rows[0]["completion"]
    assert run_tool(load_tool().main, ["--checkpoint", tiny, "--prompt", prefix, "--suffix", suffix,
                                       "--max-new-tokens", "10"]) == 0
    assert capsys.readouterr().out.startswith(prefix + middles["psm"] + suffix)  # shown in place (trained: PSM)
    # an empty prefix is an infilling request at the top of a file; without a suffix it is still an error
    out = tmp_path / "top.jsonl"
    assert run_tool(load_tool().main, ["--checkpoint", tiny, "--prompt", "", "--suffix", suffix, "--max-new-tokens",
                                       "6", "--output", str(out)]) == 0
    top = generate_sequences(engine.model, [SequenceSpec(engine.fim_prompt_ids("", suffix), 6,
                                                         stop_ids=engine.fim_stop_ids())], engine.tokenizer)[0]
    assert json.loads(out.read_text())["tokens"] == top.tokens


def test_suffix_without_fim_tokens_is_one_error_line(tmp_path, capsys):
    import sentencepiece as spm

    text = tmp_path / "code.txt"
    text.write_text("".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(200)))
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "plain"), vocab_size=120,
                                   minloglevel=2)  # a plain SentencePiece model: no FIM pieces
    save_model_checkpoint(tmp_path, get_preset("tiny", vocab_size=120, max_seq_len=MAX_SEQ_LEN),
                          tokenizer=str(tmp_path / "plain.model"))
    out = tmp_path / "out.jsonl"
    assert run_tool(load_tool().main, ["--checkpoint", str(tmp_path / "ckpt"), "--prompt", "a = ", "--suffix", "\n",
                                       "--max-new-tokens", "4", "--output", str(out)]) == 2
    lines = errors(capsys)
    assert lines[-1].startswith("error: --prompt: a suffix asks for fill-in-the-middle, which needs a tokenizer "
                                "with FIM tokens") and not out.exists()


def test_suffix_for_a_model_trained_without_fim_and_a_too_long_suffix_are_errors(tmp_path, capsys):
    """A checkpoint whose config.yaml says data.fim.rate 0 refuses --suffix (one line naming it, exit 2); a FIM prompt
    too long for the context names its parts."""
    import yaml

    from megasnow.generation.tiny_model import write_tiny_checkpoint

    step = write_tiny_checkpoint(str(tmp_path / "tiny"), seed=5, max_seq_len=64)
    out = tmp_path / "out.jsonl"
    prefix, suffix = "a = ", "\nprint(a)\n" * 20
    assert run_tool(load_tool().main, ["--checkpoint", step, "--prompt", prefix, "--suffix", suffix,
                                       "--max-new-tokens", "8", "--output", str(out)]) == 2
    engine = LocalEngine.from_path(step)
    p, s = len(engine.tokenizer.encode(prefix)), len(engine.tokenizer.encode(suffix))
    assert errors(capsys)[-1] == (f"error: --prompt with its --suffix is {p + s + 3} tokens (prompt {p} + suffix {s} "
                                  f"+ 3 FIM sentinels); with --max-new-tokens 8 that exceeds the model's context of 64 "
                                  f"tokens (shorten them or lower --max-new-tokens)")
    with open(os.path.join(step, "config.yaml"), "w") as f:
        yaml.safe_dump({"data": {"fim": {"rate": 0.0, "spm_rate": 0.5}}}, f)
    assert run_tool(load_tool().main, ["--checkpoint", step, "--prompt", prefix, "--suffix", "\n", "--max-new-tokens",
                                       "4", "--output", str(out)]) == 2
    line = errors(capsys)[-1]
    assert line.startswith(f"error: --prompt: --suffix asks for fill-in-the-middle, but model {step} was not "
                           f"trained with fill-in-the-middle (data.fim.rate is 0 in its config.yaml); ")
    assert "leave --suffix out" in line and not out.exists()
    assert run_tool(load_tool().main, ["--checkpoint", step, "--prompt", prefix, "--max-new-tokens", "2", "--output",
                                       str(out)]) == 0  # left-to-right still runs


def test_top_k_1_and_min_p_1_sample_the_greedy_tokens(checkpoint, tmp_path):
    rows = {}
    for name, flags in (("greedy", []), ("top_k", ["--temperature", "1", "--top-k", "1", "--seed", "4"]),
                        ("all", ["--temperature", "1", "--top-k", "-1", "--seed", "4"]),
                        ("min_p", ["--temperature", "1", "--min-p", "1", "--seed", "4"]),
                        ("free", ["--temperature", "1", "--seed", "4"])):
        out = tmp_path / f"{name}.jsonl"
        assert run_tool(load_tool().main, ["--checkpoint", checkpoint, "--prompt", "def add(a, b):\n",
                                           "--max-new-tokens", "12", "--output", str(out)] + flags) == 0
        rows[name] = json.loads(out.read_text())["tokens"]
    assert rows["top_k"] == rows["min_p"] == rows["greedy"] != rows["free"] == rows["all"]
