"""Benchmark and samples files: schemas, strict reading (file, line and field named), mismatched samples refused."""
import gzip
import json

import pytest

from megasnow.eval.samples import SamplesError, read_samples
from megasnow.eval.tasks import BenchmarkError, load_benchmark


def write_jsonl(path, records):
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return str(path)


EVALPLUS = {"task_id": "x/0", "prompt": "def f(a):\n", "entry_point": "f", "canonical_solution": "    return a\n",
            "base_input": [[1], [2]], "plus_input": [[3]], "atol": 0}


def test_humaneval_from_the_package():
    bench = load_benchmark("humaneval")
    assert len(bench.tasks) == 164 and bench.schema == "humaneval" and bench.name == "humaneval"
    t = bench.by_id["HumanEval/0"]
    assert t.kind == "program" and t.entry_point == "has_close_elements"
    assert t.program_for({"completion": "X"}).startswith(t.prompt + "X\n") and t.test.endswith(
        "check(has_close_elements)")
    assert t.program_for({"solution": "Y", "completion": "X"}).startswith("Y\n")  # EvalPlus: solution wins


@pytest.mark.parametrize("field", ["task_id", "prompt", "entry_point", "canonical_solution"])
def test_missing_field_names_file_line_and_field(tmp_path, field):
    bad = {k: v for k, v in EVALPLUS.items() if k != field}
    path = write_jsonl(tmp_path / "bench.jsonl", [EVALPLUS, {**EVALPLUS, "task_id": "x/1"}, bad])
    with pytest.raises(BenchmarkError, match=rf"bench.jsonl:3: field '{field}' is missing"):
        load_benchmark(path)


def test_other_bad_benchmarks(tmp_path):
    with pytest.raises(BenchmarkError, match=r"bench.jsonl:2: field 'base_input' is missing"):
        load_benchmark(write_jsonl(tmp_path / "bench.jsonl", [EVALPLUS, {**EVALPLUS, "base_input": None}]))
    with pytest.raises(BenchmarkError, match=r"b2.jsonl:2: field 'base_input'\[1\] must be a list"):
        load_benchmark(write_jsonl(tmp_path / "b2.jsonl", [EVALPLUS, {**EVALPLUS, "base_input": [[1], 2]}]))
    with pytest.raises(BenchmarkError, match=r"b3.jsonl:2: task_id 'x/0' repeats the one at .*b3.jsonl:1"):
        load_benchmark(write_jsonl(tmp_path / "b3.jsonl", [EVALPLUS, EVALPLUS]))
    with pytest.raises(BenchmarkError, match=r"b4.jsonl:1: unknown benchmark schema"):
        load_benchmark(write_jsonl(tmp_path / "b4.jsonl", [{"task_id": "a", "prompt": "p"}]))
    with pytest.raises(BenchmarkError, match=r"b5.jsonl:2: bad JSON"):
        (tmp_path / "b5.jsonl").write_text(json.dumps(EVALPLUS) + "\n{oops\n")
        load_benchmark(str(tmp_path / "b5.jsonl"))
    with pytest.raises(BenchmarkError, match=r"no such file"):
        load_benchmark(str(tmp_path / "absent.jsonl"))
    mbpp = {"task_id": 1, "text": "t", "code": "def g(x):\n    return x\n", "test_list": ["assert g(1) == 1"]}
    with pytest.raises(BenchmarkError, match=r"m.jsonl:1: field 'test_list' is missing"):
        load_benchmark(write_jsonl(tmp_path / "m.jsonl", [{**mbpp, "test_list": None, "test": "x"}]))
    with pytest.raises(BenchmarkError, match=r"m2.jsonl:2: field 'code' \(or 'canonical_solution'\) is missing"):
        load_benchmark(write_jsonl(tmp_path / "m2.jsonl", [mbpp, {k: v for k, v in mbpp.items() if k != "code"}]))


def test_compressed_benchmark(tmp_path):
    path = tmp_path / "bench.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(EVALPLUS) + "\n")
    bench = load_benchmark(str(path))
    assert bench.name == "bench" and bench.tasks[0].plus_input == [[3]] and bench.has_plus


def test_samples_must_match_the_benchmark(tmp_path):
    bench = load_benchmark("humaneval")
    good = [{"task_id": t.task_id, "completion": "    pass\n"} for t in bench.tasks]
    samples = read_samples(write_jsonl(tmp_path / "ok.jsonl", good + good[:2]), bench)
    assert len(samples) == 166 and [s.completion_id for s in samples[-2:]] == [1, 1]
    with pytest.raises(SamplesError, match=r"wrong.jsonl:3: task_id 'Mbpp/2' is not a task of benchmark 'humaneval'"):
        read_samples(write_jsonl(tmp_path / "wrong.jsonl", good[:2] + [{"task_id": "Mbpp/2", "completion": ""}]),
                     bench)
    with pytest.raises(SamplesError, match=r"163 of 164 tasks of 'humaneval' have no sample.*--allow-missing"):
        read_samples(write_jsonl(tmp_path / "one.jsonl", good[:1]), bench)
    assert len(read_samples(str(tmp_path / "one.jsonl"), bench, allow_missing=True)) == 1
    with pytest.raises(SamplesError, match=r"nofield.jsonl:1: neither 'completion' nor 'solution'"):
        read_samples(write_jsonl(tmp_path / "nofield.jsonl", [{"task_id": "HumanEval/0"}]), bench)
    with pytest.raises(SamplesError, match=r"list.jsonl:1: field 'solution' must be a string"):
        read_samples(write_jsonl(tmp_path / "list.jsonl", [{"task_id": "HumanEval/0", "solution": ["a"]}]), bench)
    with pytest.raises(SamplesError, match=r"noid.jsonl:1: field 'task_id' is missing"):
        read_samples(write_jsonl(tmp_path / "noid.jsonl", [{"completion": "x"}]), bench)
