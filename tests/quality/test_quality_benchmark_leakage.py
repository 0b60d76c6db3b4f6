"""No evaluation benchmark reaches annotator training: positives matching HumanEval (always) or a user benchmark
file are dropped and reported by the training-data builder, or refused; annotate.py train says so."""
import json

import pytest

from megasnow.quality.training_data import BenchmarkLeakError, PositiveSource, build_training_set
from tests.quality.machine_corpus import humaneval_solutions, machine_negatives, stdlib_functions, write_jsonl


@pytest.fixture(scope="module")
def leaky(tmp_path_factory):
    """30 stdlib functions with 5 HumanEval solutions among them (lines 3, 9, 15, 21, 27), and 60 negatives."""
    root = tmp_path_factory.mktemp("leaky")
    clean = stdlib_functions(30, seed=4)
    he = humaneval_solutions()
    texts = list(clean)
    for k, task in enumerate((0, 11, 42, 99, 163)):  # a HumanEval solution written as a one-file document
        texts.insert(2 + 6 * k, f"<repo_name>leaked<file_sep>he_{task}.py\n{he[task]}")
    negatives = [{"text": t} for t in machine_negatives(60, seed=5)]
    return {"positives": write_jsonl(str(root / "pos.jsonl"), [{"text": t} for t in texts]),
            "negatives": write_jsonl(str(root / "neg.jsonl"), negatives), "clean": clean, "root": root}


def test_humaneval_positives_are_dropped_and_reported(leaky):
    train, heldout, stats = build_training_set([PositiveSource([leaky["positives"]])], [leaky["negatives"]],
                                               heldout_fraction=0.2, seed=0)
    m = stats["benchmark_matches"]
    assert m["dropped"] == 5 and m["tasks"] == {"humaneval": 5}
    assert [e.split(": ")[1] for e in m["examples"]] == [f"humaneval HumanEval/{t}" for t in (0, 11, 42, 99, 163)]
    assert [e.split(": ")[0].rsplit(":", 1)[1] for e in m["examples"]] == ["3", "9", "15", "21", "27"]
    positives = {e.text for e in train + heldout if e.label == 1}
    assert positives == set(leaky["clean"])  # exactly the clean ones remain, balanced against as many negatives
    assert stats["positives_available"] == 30 and len(train) + len(heldout) == 60


def test_refuse_names_the_matching_positives(leaky):
    with pytest.raises(BenchmarkLeakError) as e:
        build_training_set([PositiveSource([leaky["positives"]])], [leaky["negatives"]], on_benchmark_match="refuse")
    msg = str(e.value)
    assert msg.startswith("5 of 35 positives match evaluation benchmarks")
    assert f"{leaky['positives']}:3 matches humaneval HumanEval/0" in msg and "HumanEval/11" in msg


def test_user_benchmark_file_is_checked_too(leaky, tmp_path):
    """A user benchmark file (here two of the clean functions; named by its file name) removes its tasks from the positives;
    instruction-style positives (problem as a comment + fenced solution) are checked after formatting."""
    func_a, func_b = leaky["clean"][0], leaky["clean"][7]
    bench = write_jsonl(str(tmp_path / "bench.jsonl"), [{"task_id": "Mine/0", "prompt": "", "canonical_solution": func_a},
                                                        {"task_id": "Mine/1", "text": func_b}])
    he = humaneval_solutions()[5]
    sig, body = he.split('"""', 2)[0], he.split('"""', 2)[2]
    instructions = write_jsonl(str(tmp_path / "instr.jsonl"), [
        {"problem": "Write it.", "solution": f"```python\n{he}\n```"},  # a HumanEval solution in a fence
        {"problem": "Add two numbers.", "solution": "```python\ndef add(a, b):\n    return a + b\n```"}])
    sources = [PositiveSource([leaky["positives"]]), PositiveSource([instructions], kind="instruction")]
    train, heldout, stats = build_training_set(sources, [leaky["negatives"]], heldout_fraction=0.2,
                                               benchmarks=[bench])
    m = stats["benchmark_matches"]
    assert m["tasks"] == {"bench": 2, "humaneval": 6} and m["dropped"] == 8
    kept = {e.text for e in train + heldout if e.label == 1}
    assert func_a not in kept and func_b not in kept and not any(sig in t and body in t for t in kept)
    assert any("def add(a, b)" in t for t in kept)


def test_annotate_train_refuses_or_warns(leaky, tmp_path, capsys):
    from megasnow.utils.cli import run_tool
    from tools.annotate import main

    argv = ["train", "--positives", leaky["positives"], "--negatives", leaky["negatives"], "--max-length", "32",
            "--epochs", "1", "--device", "cpu"]
    assert run_tool(main, argv + ["--output", str(tmp_path / "refused"), "--on-benchmark-match", "refuse"],
                    prog="annotate.py") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 5 of 35 positives match evaluation benchmarks") and len(err.splitlines()) == 1
    assert not (tmp_path / "refused").exists()
    assert run_tool(main, argv + ["--output", str(tmp_path / "ok")], prog="annotate.py") == 0
    out, err = capsys.readouterr()
    assert "dropped 5 positives matching evaluation benchmarks (humaneval: 5; first: " in err
    stats = json.loads(out.split("training data: ", 1)[1].splitlines()[0])
    assert stats["benchmark_matches"]["dropped"] == 5 and stats["positives_available"] == 30


def test_benchmark_file_errors_name_the_flag_and_fail_before_reading_inputs(leaky, tmp_path, capsys):
    from megasnow.utils.cli import run_tool
    from tools.annotate import main

    argv = ["train", "--positives", leaky["positives"], "--negatives", str(tmp_path / "missing_negatives"),
            "--output", str(tmp_path / "a")]
    assert run_tool(main, argv + ["--benchmark", str(tmp_path / "nope.jsonl")], prog="annotate.py") == 2
    assert capsys.readouterr().err == f"error: --benchmark: {str(tmp_path / 'nope.jsonl')!r} is not a file; check " \
                                      f"the path\n"
    bad = write_jsonl(str(tmp_path / "bad.jsonl"), [{"task_id": "X/0", "question": "no solution here"}])
    assert run_tool(main, argv + ["--benchmark", bad], prog="annotate.py") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: no benchmark text in fields") and "given to --benchmark)" in err
    assert "decontamination." not in err and not (tmp_path / "a").exists()


def test_eval_reads_benchmark_files_by_the_rule_train_uses(tmp_path):
    """An EvalPlus file (prompt + canonical_solution) works for train's check and, by default, for eval too."""
    from megasnow.quality.evaluate import benchmark_solutions

    bench = write_jsonl(str(tmp_path / "plus.jsonl"), [
        {"task_id": "P/0", "prompt": "def f():\n", "canonical_solution": "    return 1\n"},
        {"task_id": "P/1", "text": "def g():\n    return 2\n"},
        {"task_id": "M/2", "code": "def h():\n    return 3\n"}])
    assert benchmark_solutions([bench]) == ["def f():\n    return 1\n", "def g():\n    return 2\n",
                                            "def h():\n    return 3\n"]
    assert benchmark_solutions([bench], ("task_id",)) == ["P/0", "P/1", "M/2"]
    bad = write_jsonl(str(tmp_path / "bad.jsonl"), [{"task_id": "Q/0", "question": "?"}])
    with pytest.raises(Exception, match=r"bad.jsonl:1: benchmark record has no solution .*--benchmark-fields"):
        benchmark_solutions([bad])
