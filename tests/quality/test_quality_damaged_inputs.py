"""Damaged inputs in every quality reader (issue 10 §2): a truncated .jsonl.gz keeps its readable records and is
reported with its path (score, train, eval, select); with --strict the run stops with exit 2 and one line naming
the file."""
import gzip
import json
import os

import pytest

from megasnow.quality.evaluate import benchmark_solutions
from megasnow.quality.score import read_scores, score_corpus
from megasnow.quality.selection import select_documents
from megasnow.quality.training_data import PositiveSource, build_training_set, sample_negatives
from megasnow.utils.cli import run_tool
from megasnow.utils.records import ReadReport, ShardReadError
from tests.quality.machine_corpus import machine_negatives, stdlib_functions, train_tiny_tokenizer, write_jsonl


def cut_gzip(path, records, keep=0.6):
    """Write `records` as a .jsonl.gz cut at `keep` of its compressed bytes; returns how many stay readable."""
    raw = "".join(json.dumps(r) + "\n" for r in records).encode()
    packed = gzip.compress(raw)
    with open(path, "wb") as f:
        f.write(packed[: int(len(packed) * keep)])
    readable = 0
    try:
        with gzip.open(path, "rt") as f:
            for line in f:
                readable += line.endswith("\n")
    except EOFError:
        pass
    assert 0 < readable < len(records)
    return readable


@pytest.fixture
def damaged_corpus(tmp_path):
    docs = tmp_path / "docs"
    texts = stdlib_functions(30, seed=3) + machine_negatives(30, seed=3, chunk_chars=800)
    good = [{"id": f"a{i}", "text": t, "lang": "python" if i % 2 else "c"} for i, t in enumerate(texts[:20])]
    cut = [{"id": f"b{i}", "text": t, "lang": "python" if i % 2 else "c"} for i, t in enumerate(texts[20:])]
    write_jsonl(str(docs / "a.jsonl"), good)
    docs.mkdir(exist_ok=True)
    readable = cut_gzip(str(docs / "b.jsonl.gz"), cut)
    return {"docs": str(docs), "good": good, "cut": cut, "readable": readable, "damaged": str(docs / "b.jsonl.gz")}


def test_score_cli_reports_a_truncated_gzip_and_keeps_its_records(tiny_annotator, damaged_corpus, tmp_path, capsys):
    from tools.annotate import main

    out = str(tmp_path / "scores")
    args = ["score", "--input", damaged_corpus["docs"], "--annotator", tiny_annotator, "--output", out,
            "--device", "cpu", "--threads", "1"]
    assert run_tool(main, args) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and damaged_corpus["damaged"] in warnings[0]
    assert f"unreadable after {damaged_corpus['readable']} records" in warnings[0]
    rows = read_scores(os.path.join(out, "b.scores.jsonl"))
    assert [r["id"] for r in rows] == [r["id"] for r in damaged_corpus["cut"][: damaged_corpus["readable"]]]
    assert f"scored {20 + damaged_corpus['readable']} of {20 + damaged_corpus['readable']} documents" in captured.out
    assert "1 damaged" in captured.out


def test_score_cli_strict_stops_at_the_damaged_shard_with_one_line(tiny_annotator, damaged_corpus, tmp_path, capsys):
    from tools.annotate import main

    out = tmp_path / "strict"
    args = ["score", "--input", damaged_corpus["docs"], "--annotator", tiny_annotator, "--output", str(out),
            "--device", "cpu", "--threads", "1", "--strict"]
    assert run_tool(main, args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("score:")]
    assert len(err) == 1 and err[0].startswith("error: ") and damaged_corpus["damaged"] in err[0], err
    assert not (out / "b.scores.jsonl").exists() and not list(out.glob(".*.tmp"))


def test_score_library_strict_raises_shard_read_error(tiny_annotator, damaged_corpus, tmp_path):
    with pytest.raises(ShardReadError, match="b.jsonl.gz") as info:
        score_corpus([damaged_corpus["damaged"]], str(tmp_path / "s"), tiny_annotator, threads=1, progress=False,
                     strict=True)
    assert info.value.records == damaged_corpus["readable"]


def test_training_data_keeps_readable_records_of_a_damaged_shard(damaged_corpus, tmp_path):
    positives = write_jsonl(str(tmp_path / "pos.jsonl"), [{"text": t} for t in stdlib_functions(12, seed=9)])
    seen = []
    train, heldout, stats = build_training_set([PositiveSource([positives])], [damaged_corpus["damaged"]],
                                               heldout_fraction=0.25, seed=0, on_damaged=seen.append)
    assert [d.path for d in seen] == [damaged_corpus["damaged"]]
    assert stats["damaged_shards"] == [{"path": damaged_corpus["damaged"], "records": damaged_corpus["readable"],
                                        "error": seen[0].error, "byte_offset": seen[0].byte_offset}]
    report = ReadReport()
    negatives = sample_negatives([damaged_corpus["damaged"]], 1000, 0, report=report)
    assert sorted(e.source for e in negatives) == sorted(f"{damaged_corpus['damaged']}:{i}"
                                                        for i in range(1, damaged_corpus["readable"] + 1))
    assert report.records == damaged_corpus["readable"] and len(report.damaged) == 1
    with pytest.raises(ShardReadError, match="b.jsonl.gz"):
        build_training_set([PositiveSource([positives])], [damaged_corpus["damaged"]], strict=True)


def test_benchmark_file_damaged_is_reported_or_strict_error(tmp_path):
    path = str(tmp_path / "bench.jsonl.gz")
    records = [{"text": f"def f{i}(x):\n    return x + {i}\n"} for i in range(200)]
    readable = cut_gzip(path, records)
    report = ReadReport()
    assert benchmark_solutions([path], report=report) == [r["text"] for r in records[:readable]]
    assert [d.path for d in report.damaged] == [path]
    with pytest.raises(ShardReadError, match="bench.jsonl.gz"):
        benchmark_solutions([path], strict=True)


def test_selection_uses_the_records_scoring_kept(tiny_annotator, damaged_corpus, tmp_path):
    scores = str(tmp_path / "scores")
    score_corpus([damaged_corpus["docs"]], scores, tiny_annotator, threads=1, progress=False)
    texts = [d["text"] for d in damaged_corpus["good"] + damaged_corpus["cut"]]
    tokenizer = train_tiny_tokenizer(str(tmp_path / "tok.json"), texts)
    report = select_documents([damaged_corpus["docs"]], scores, str(tmp_path / "sel"), tokenizer, 2000)
    assert report["scored_documents"] == 20 + damaged_corpus["readable"]
    selected = []
    for shard in report["output_shards"]:
        with open(shard) as f:
            selected += [json.loads(line)["id"] for line in f]
    readable_ids = {d["id"] for d in damaged_corpus["good"] + damaged_corpus["cut"][: damaged_corpus["readable"]]}
    assert selected and set(selected) <= readable_ids
    with pytest.raises(ShardReadError, match="b.jsonl.gz"):
        select_documents([damaged_corpus["docs"]], scores, str(tmp_path / "sel2"), tokenizer, 2000, strict=True)
