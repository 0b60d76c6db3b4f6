"""Sample generation through the local backend: the same text as transformers' greedy generation of the same
weights (completion and chat prompts, stop sequences), resumable, and code extraction from chat answers."""
import json
import os
import re

import pytest
import torch

from megasnow.eval.codegen import GenerationSettings, generate_samples
from megasnow.eval.prompts import build_request, chat_message, chat_solution, extract_code, stop_sequences
from megasnow.eval.tasks import load_benchmark
from megasnow.generation.local import LocalBackend

TASKS = ["HumanEval/2", "HumanEval/13", "HumanEval/23", "HumanEval/53"]
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("humaneval").subset(TASKS)


def hf_greedy(hf_dir, prompts):
    """transformers' greedy continuation text of each prompt (its own tokenizer, EOS ids from the folder)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with open(os.path.join(hf_dir, "generation_config.json")) as f:
        eos = json.load(f)["eos_token_id"]
    eos = eos if isinstance(eos, list) else [eos]
    out = []
    with torch.no_grad():
        for text in prompts:
            ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                                 do_sample=False, eos_token_id=eos, pad_token_id=eos[0])[0, ids.shape[1]:].tolist()
            gen = gen[:next((i for i, t in enumerate(gen) if t in eos), len(gen))]
            out.append(tok.decode(gen, skip_special_tokens=False, clean_up_tokenization_spaces=False))
    return tok, out


def cut(text, stops):
    return text[:min([i for i in (text.find(s) for s in stops) if i >= 0] or [len(text)])]


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(x) for x in f]


def test_local_generation_equals_transformers_greedy(tiny, bench, tmp_path):
    ckpt, hf_dir = tiny
    settings = dict(n=1, temperature=0.0, max_tokens=NEW_TOKENS)
    with LocalBackend(ckpt, max_num_seqs=3) as backend:  # 4 prompts in batches of 3 and 1
        completion = generate_samples(backend, bench, GenerationSettings(style="completion", **settings),
                                      str(tmp_path / "completion.jsonl"), progress=False)
        chat = generate_samples(backend, bench, GenerationSettings(style="chat", **settings),
                                str(tmp_path / "chat.jsonl"), progress=False)
    assert completion["samples_written"] == chat["samples_written"] == len(TASKS)
    tok, plain = hf_greedy(hf_dir, [t.prompt for t in bench.tasks])
    rendered = [tok.apply_chat_template([{"role": "user", "content": chat_message(t)}], tokenize=False,
                                        add_generation_prompt=True) for t in bench.tasks]
    _, answers = hf_greedy(hf_dir, rendered)
    got = read_jsonl(tmp_path / "completion.jsonl")
    assert [r["task_id"] for r in got] == TASKS
    assert [r["completion"] for r in got] == [cut(text, stop_sequences(t)) for text, t in zip(plain, bench.tasks)]
    got = read_jsonl(tmp_path / "chat.jsonl")
    assert [r["raw"] for r in got] == answers
    assert [r["solution"] for r in got] == [chat_solution(t, a) for t, a in zip(bench.tasks, answers)]
    assert all(r["completion"] == "\n" + r["solution"] and r["prompt_style"] == "chat" for r in got)


class _StopAfter:
    """A real backend that raises KeyboardInterrupt after `limit` results (an interrupted run)."""

    def __init__(self, backend, limit):
        self.backend, self.limit, self.model_name, self.count = backend, limit, backend.model_name, 0

    def generate(self, requests):
        for result in self.backend.generate(requests):
            if self.count == self.limit:
                raise KeyboardInterrupt
            self.count += 1
            yield result


def test_interrupted_generation_resumes(tiny, bench, tmp_path):
    ckpt, _ = tiny
    settings = GenerationSettings(n=2, temperature=0.8, max_tokens=8, seed=5, chunk=1)
    with LocalBackend(ckpt) as backend:
        generate_samples(backend, bench, settings, str(tmp_path / "full.jsonl"), progress=False)
        with pytest.raises(KeyboardInterrupt):
            generate_samples(_StopAfter(backend, 2), bench, settings, str(tmp_path / "resumed.jsonl"), progress=False)
        assert not os.path.exists(tmp_path / "resumed.jsonl")
        assert len(read_jsonl(str(tmp_path / "resumed.jsonl") + ".partial")) == 4  # 2 finished chunks x 2 samples
        stats = generate_samples(backend, bench, settings, str(tmp_path / "resumed.jsonl"), progress=False)
    assert stats["resumed_tasks"] == 2 and stats["requests"] == 2
    assert read_jsonl(tmp_path / "resumed.jsonl") == read_jsonl(tmp_path / "full.jsonl")
    assert not os.path.exists(str(tmp_path / "resumed.jsonl") + ".partial")
    assert [r["completion_id"] for r in read_jsonl(tmp_path / "full.jsonl")] == [0, 1] * len(TASKS)


def test_requests_and_code_extraction(bench):
    task = bench.by_id["HumanEval/2"]
    req = build_request(task, "completion", GenerationSettings().params(0), "r")
    assert req.prompt == task.prompt and "\ndef " in req.params.stop and "\nif __name__" in req.params.stop
    answer = ("Here you go:\n```python\nimport math\n\ndef helper(x):\n    return x\n```\nand\n```python\n"
              "def truncate_number(number: float) -> float:\n    return number % 1.0\n```\nDone.")
    assert extract_code(answer, "truncate_number") == \
        "def truncate_number(number: float) -> float:\n    return number % 1.0\n"
    assert extract_code("no fence at all", "f") == "no fence at all"
    assert extract_code("```\nx = 1\n", None) == "x = 1\n"  # an unclosed fence
    hinted = bench.by_id["HumanEval/13"]
    assert chat_solution(hinted, "```python\ndef greatest_common_divisor(a, b):\n    return 1\n```") == \
        "def greatest_common_divisor(a, b):\n    return 1\n"
    body_only = chat_solution(task, "```python\n    return number % 1.0\n```")
    assert body_only == task.prompt + "    return number % 1.0\n"  # a continuation of the function
    mbpp_like = load_benchmark(os.path.join(os.path.dirname(__file__), "fixtures", "mbpp_mini.jsonl")).tasks[0]
    assert stop_sequences(mbpp_like)[0] == '\n"""'
    with pytest.raises(Exception, match="identical greedy samples"):
        GenerationSettings(n=3, temperature=0.0)


def test_interrupt_keeps_the_finished_tasks_of_an_unfinished_chunk(tiny, bench, tmp_path):
    ckpt, _ = tiny
    settings = GenerationSettings(max_tokens=8)  # one chunk of 64 requests holds all 4 tasks
    out = str(tmp_path / "s.jsonl")
    with LocalBackend(ckpt, max_num_seqs=1) as backend:
        with pytest.raises(KeyboardInterrupt):
            generate_samples(_StopAfter(backend, 2), bench, settings, out, progress=False)
        assert len(read_jsonl(out + ".partial")) == 2  # the 2 tasks finished before the Ctrl-C
        stats = generate_samples(backend, bench, settings, out, progress=False)
        full = generate_samples(backend, bench, settings, str(tmp_path / "full.jsonl"), progress=False)
    assert stats["resumed_tasks"] == 2 and stats["requests"] == 2 and full["requests"] == 4
    assert read_jsonl(out) == read_jsonl(tmp_path / "full.jsonl")


class _NoCheck:
    """A real backend that cannot tell bad requests before generating (as a remote server): they fail when asked."""

    def __init__(self, backend):
        self.backend, self.model_name = backend, backend.model_name

    def generate(self, requests):
        return self.backend.generate(requests)


def test_failed_requests_are_never_recorded_and_a_failed_run_leaves_nothing(tiny, bench, tmp_path):
    from megasnow.eval.codegen import GenerationFailed

    ckpt, _ = tiny
    out = tmp_path / "new" / "s.jsonl"
    settings = GenerationSettings(max_tokens=1020)  # the prompts + 1020 new tokens exceed the 1024-token context
    with LocalBackend(ckpt) as backend:
        with pytest.raises(GenerationFailed) as known:  # known before generating: refused up front
            generate_samples(backend, bench, settings, str(out), progress=False)
        assert not (tmp_path / "new").exists()
        with pytest.raises(GenerationFailed) as failed:  # found while generating: every request failed
            generate_samples(_NoCheck(backend), bench, settings, str(out), progress=False)
        assert not (tmp_path / "new").exists()
    assert str(known.value).startswith("4 of 4 generation requests cannot run on ckpt: This model's maximum "
                                       "context length is 1024 tokens")
    assert str(failed.value).startswith("all 4 generation requests failed: HumanEval/")
    assert "maximum context length is 1024 tokens" in str(failed.value)


def test_progress_lines_while_generating(tiny, bench, tmp_path):
    ckpt, _ = tiny
    lines = []
    with LocalBackend(ckpt, max_num_seqs=1) as backend:
        generate_samples(backend, bench, GenerationSettings(max_tokens=16), str(tmp_path / "s.jsonl"),
                         log=lines.append, progress_interval=0.01)
    beats = [x for x in lines if x.startswith("generating: ")]
    assert beats and all(re.fullmatch(r"generating: [0-4]/4 tasks in \d+s \(\d+\.\d\d tasks/s, ETA (\d+s|unknown)\)",
                                      x) for x in beats), lines


def test_failure_advice_by_error_kind():
    """A rerun may cure an unavailable server or a timeout; a 4xx is refused again, so the advice names what to
    change (as tools/synthesize.py words it)."""
    from megasnow.eval.codegen import failure_advice

    assert failure_advice({"error_kinds": {"unavailable": 2, "timeout": 1}}) == (
        "3 failed for reasons a rerun may cure (unavailable, timeout): rerun the same command to retry the failed ones")
    bad = failure_advice({"error_kinds": {"bad_request": 1}, "first_errors": {"bad_request": "7: temperature < 0"}})
    assert bad == ("1 were refused as bad requests (HTTP 4xx; first: 7: temperature < 0): a plain rerun is refused "
                   "the same way; change what the message names (--model, --prompt-style, sampling flags, "
                   "--max-tokens) and rerun")
    both = failure_advice({"error_kinds": {"bad_request": 1, "unavailable": 1}, "first_errors": {
        "bad_request": "3: This model's maximum context length is 256 tokens. However, you requested 300 tokens"}})
    assert "lower --max-tokens, or pass --skip-too-long" in both and both.endswith("rerun the same command to retry "
                                                                                  "the failed ones")


class _LastFirst:
    """A real backend whose results of each call arrive last-first, as concurrent requests may finish, and that
    cannot tell up front which requests will fail (no `check`, like a remote server)."""

    def __init__(self, backend):
        self.backend, self.model_name = backend, backend.model_name

    def generate(self, requests):
        return reversed(list(self.backend.generate(requests)))


def test_the_first_failure_named_is_the_first_in_benchmark_order(tiny_short, bench, tmp_path):
    """HumanEval/2 and /13 fail (prompt + max_tokens past the 160-token context) and /2 is reported last: the
    message still names /2 (the lowest task index), not the first to complete."""
    from megasnow.eval.codegen import GenerationFailed

    out = tmp_path / "s.jsonl"
    with LocalBackend(tiny_short) as backend:
        with pytest.raises(GenerationFailed) as e:
            generate_samples(_LastFirst(backend), bench.subset(["HumanEval/2", "HumanEval/13"]),
                             GenerationSettings(max_tokens=100), str(out), progress=False)
    assert str(e.value).startswith("all 2 generation requests failed: HumanEval/2: This model's maximum context "
                                   "length is 160 tokens"), str(e.value)
    assert str(e.value).count("maximum context length") == 1  # the advice does not quote the same refusal again
    assert "HumanEval/13" not in str(e.value) and str(e.value).endswith("as failed and rerun")
    assert list(tmp_path.iterdir()) == []
