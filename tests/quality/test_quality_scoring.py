"""Sharded scoring: batched scores equal one-window-at-a-time scores, bad documents are counted,
a killed run resumes to byte-identical outputs, failing shards are retried and never half-written."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from megasnow.quality.annotator import load_annotator
from megasnow.quality.score import BatchedScorer, read_scores, score_corpus
from megasnow.quality.windows import file_windows
from tests.quality.machine_corpus import machine_negatives, stdlib_functions, write_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def code_texts(n, seed):
    """Real files of very different lengths: whole functions, header chunks, and long concatenations."""
    rng = np.random.default_rng(seed)
    base = stdlib_functions(60, seed=seed) + machine_negatives(60, seed=seed, chunk_chars=3000)
    return ["\n\n".join(rng.choice(base, size=int(rng.integers(1, 4)))) for _ in range(n)]


@pytest.fixture
def one_thread():
    # Bitwise-identical comparisons need the same intra-op thread count in every run.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_batched_scores_equal_window_by_window_scores(tiny_annotator):
    annotator = load_annotator(tiny_annotator)
    texts = code_texts(12, seed=0)
    scores, token_lists = BatchedScorer(annotator, batch_tokens=2048).score_texts(texts)
    assert any(len(t) > 3 * annotator.window_tokens for t in token_lists)  # long files present
    assert any(len(t) <= annotator.window_tokens for t in token_lists)  # and short ones
    with torch.no_grad():
        for text_ids, score in zip(token_lists, scores):
            per_window = []
            for w in file_windows(text_ids, annotator.window_tokens):
                ids, mask = annotator.collate([w])  # alone: no padding at all
                per_window.append(torch.sigmoid(annotator(ids, mask)).item())
            assert len(per_window) == (1 if len(text_ids) <= annotator.window_tokens else 3)
            assert score == pytest.approx(np.mean(per_window), abs=1e-5)


def test_bad_documents_get_no_score_and_are_counted(tiny_annotator, tmp_path):
    shard = tmp_path / "docs" / "mixed.jsonl"
    shard.parent.mkdir()
    good = [{"id": f"g{i}", "text": t, "lang": "python"} for i, t in enumerate(code_texts(3, seed=1))]
    lines = [json.dumps(good[0]),
             json.dumps({"id": "empty", "text": "", "lang": "c"}),
             json.dumps({"id": "blank", "text": " \n \n", "lang": "c"}),
             json.dumps({"id": "nul", "text": "ELF\x00\x00\x01binary", "lang": "c"}),
             json.dumps({"id": "notext", "lang": "c"}),
             json.dumps({"id": "number", "text": 42, "lang": "c"}),
             json.dumps(good[1])]
    raw = "\n".join(lines).encode() + b'\n{"id": "latin1", "text": "caf\xe9"}\n{not json\n' + json.dumps(good[2]).encode() + b"\n"
    shard.write_bytes(raw)
    summary = score_corpus([str(tmp_path / "docs")], str(tmp_path / "scores"), tiny_annotator, progress=False)
    # 8 parsed records (3 scored, 5 bad); the 2 unreadable lines are counted as skipped, not as documents
    assert summary["documents"] == 8 and summary["scored"] == 3
    skipped = dict(summary["skipped"])
    bad_json = [k for k in skipped if k.startswith("bad JSON")]
    assert len(bad_json) == 1 and skipped.pop(bad_json[0]) == 1
    assert skipped == {"empty": 2, "binary": 1, "missing text": 1, "non-string": 1, "invalid UTF-8": 1}
    rows = read_scores(str(tmp_path / "scores" / "mixed.scores.jsonl"))
    assert [r["id"] for r in rows] == ["g0", "empty", "blank", "nul", "notext", "number", "g1", "g2"]
    assert [r.get("skipped") for r in rows] == [None, "empty", "empty", "binary", "missing text", "non-string", None, None]
    assert all((r["score"] is None) == ("skipped" in r) for r in rows)
    assert all(0.0 < r["score"] < 1.0 for r in rows if r["score"] is not None)


def _make_shards(root, sizes):
    texts = code_texts(sum(sizes), seed=7)
    start = 0
    for k, n in enumerate(sizes):
        recs = [{"id": f"s{k}-{i}", "text": t, "lang": "python" if i % 3 else "c", "repo": f"r{i % 5}"}
                for i, t in enumerate(texts[start : start + n])]
        write_jsonl(os.path.join(root, f"shard{k}.jsonl"), recs)
        start += n


def _score_files(folder):
    return {os.path.basename(p): open(p, "rb").read() for p in sorted(glob.glob(os.path.join(folder, "*.scores.jsonl")))}


def test_killed_scoring_run_resumes_to_identical_scores(tiny_annotator, tmp_path, one_thread):
    docs = str(tmp_path / "docs")
    _make_shards(docs, [10, 120, 120, 120])
    kwargs = dict(chunk_docs=50, threads=1, progress=False, keep_fields=["repo"])
    reference = score_corpus([docs], str(tmp_path / "reference"), tiny_annotator, **kwargs)
    assert reference["scored"] == 370

    killed = str(tmp_path / "killed")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, os.path.join(REPO, "tools", "annotate.py"), "score", "--input", docs, "--annotator",
           tiny_annotator, "--output", killed, "--threads", "1", "--chunk-docs", "50", "--keep-fields", "repo"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    def at_kill_point():  # shard0 finished and the next shard's temporary file open (not merely between shards)
        return _score_files(killed) and glob.glob(os.path.join(killed, ".shard[123].scores.jsonl.*.tmp"))

    try:
        # Kill mid-run. The run is stopped (SIGSTOP) before the kill point is checked again: between a check and
        # the kill a loaded machine can let it finish that shard (no temporary file left) or the whole run.
        while True:
            assert proc.poll() is None, "scoring subprocess exited before the kill point"
            assert time.time() < deadline, "scoring subprocess made no progress"
            if at_kill_point():
                os.kill(proc.pid, signal.SIGSTOP)
                if at_kill_point():
                    break
                os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    done_before = _score_files(killed)
    leftovers = glob.glob(os.path.join(killed, ".*.tmp"))
    assert 1 <= len(done_before) < 4 and leftovers, (sorted(done_before), leftovers)

    resumed = score_corpus([docs], killed, tiny_annotator, **kwargs)
    assert resumed["shards_skipped_done"] == len(done_before)
    assert resumed["shards_scored_now"] == 4 - len(done_before)
    assert not glob.glob(os.path.join(killed, ".*.tmp"))  # the crashed shard's temp file was cleaned up
    assert _score_files(killed) == _score_files(str(tmp_path / "reference"))
    assert resumed["documents"] == reference["documents"] and resumed["scored"] == reference["scored"]

    again = score_corpus([docs], killed, tiny_annotator, **kwargs)  # everything done: nothing rescored
    assert again["shards_scored_now"] == 0 and again["files_per_s_this_run"] is None


def test_failing_shard_is_retried_and_never_half_written(tiny_annotator, tmp_path, monkeypatch, one_thread):
    import megasnow.quality.score as score_mod

    docs = str(tmp_path / "docs")
    _make_shards(docs, [30, 30])
    kwargs = dict(chunk_docs=10, threads=1, progress=False)
    score_corpus([docs], str(tmp_path / "ref"), tiny_annotator, **kwargs)
    reference = _score_files(str(tmp_path / "ref"))

    real_score_texts = score_mod.BatchedScorer.score_texts
    calls = {"n": 0}

    def flaky(self, texts, **kw):  # the second chunk of the first attempt dies mid-shard
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("simulated worker failure")
        return real_score_texts(self, texts, **kw)

    monkeypatch.setattr(score_mod.BatchedScorer, "score_texts", flaky)
    out = str(tmp_path / "out")
    summary = score_corpus([docs], out, tiny_annotator, retries=1, **kwargs)
    assert summary["scored"] == 60 and calls["n"] > 2
    assert _score_files(out) == reference
    assert not glob.glob(os.path.join(out, ".*.tmp"))

    def always_fails(self, texts, **kw):
        raise OSError("disk on fire")

    monkeypatch.setattr(score_mod.BatchedScorer, "score_texts", always_fails)
    with pytest.raises(RuntimeError, match=r"shard0.jsonl failed after 2 attempts: disk on fire"):
        score_corpus([docs], str(tmp_path / "never"), tiny_annotator, retries=1, **kwargs)
    assert not os.path.exists(str(tmp_path / "never" / "shard0.scores.jsonl"))
    assert not glob.glob(str(tmp_path / "never" / ".*.tmp"))


def test_parquet_shards_score_like_jsonl(tiny_annotator, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = code_texts(12, seed=3)
    recs = [{"id": f"d{i}", "text": t, "lang": "python"} for i, t in enumerate(texts)]
    write_jsonl(str(tmp_path / "j" / "part.jsonl"), recs)
    (tmp_path / "p").mkdir()
    pq.write_table(pa.Table.from_pylist(recs), str(tmp_path / "p" / "part.parquet"))
    score_corpus([str(tmp_path / "j")], str(tmp_path / "sj"), tiny_annotator, progress=False)
    score_corpus([str(tmp_path / "p")], str(tmp_path / "sp"), tiny_annotator, progress=False)
    sj = read_scores(str(tmp_path / "sj" / "part.scores.jsonl"))
    sp = read_scores(str(tmp_path / "sp" / "part.scores.jsonl"))
    assert [(r["id"], r["score"]) for r in sj] == [(r["id"], r["score"]) for r in sp]


def test_corrupt_shards_are_reported_not_fatal(tiny_annotator, tmp_path, monkeypatch, one_thread):
    """A truncated .jsonl.gz keeps the scores of the documents before the cut; a corrupt Parquet scores nothing;
    both are listed with their error, the good shard is scored as usual, and an I/O error is retried first."""
    import errno
    import gzip

    import megasnow.quality.score as score_mod
    from megasnow.utils.records import ShardReadError

    docs = tmp_path / "docs"
    _make_shards(str(docs), [20, 40])
    raw = (docs / "shard1.jsonl").read_bytes()
    packed = gzip.compress(raw)
    (docs / "shard1.jsonl.gz").write_bytes(packed[: len(packed) * 6 // 10])  # cut mid-stream
    (docs / "shard1.jsonl").unlink()
    (docs / "broken.parquet").write_bytes(b"PAR1" + os.urandom(300))
    kwargs = dict(chunk_docs=8, threads=1, progress=False)
    summary = score_corpus([str(docs)], str(tmp_path / "out"), tiny_annotator, **kwargs)

    unreadable = {os.path.basename(u["input"]): u for u in summary["unreadable_shards"]}
    assert sorted(unreadable) == ["broken.parquet", "shard1.jsonl.gz"]
    assert unreadable["broken.parquet"]["records_read"] == 0 and "Arrow" in unreadable["broken.parquet"]["error"]
    cut = unreadable["shard1.jsonl.gz"]
    assert 0 < cut["records_read"] < 40 and cut["error"].startswith("EOFError")
    rows = read_scores(str(tmp_path / "out" / "shard1.scores.jsonl"))
    assert [r["id"] for r in rows] == [f"s1-{i}" for i in range(cut["records_read"])]
    assert summary["documents"] == summary["scored"] == 20 + cut["records_read"]
    assert read_scores(str(tmp_path / "out" / "broken.scores.jsonl")) == []
    again = score_corpus([str(docs)], str(tmp_path / "out"), tiny_annotator, **kwargs)
    assert again["shards_scored_now"] == 0 and again["unreadable_shards"] == summary["unreadable_shards"]

    real = score_mod.iter_records
    calls = {"n": 0}

    def eio_once(path, **kw):  # an I/O error (errno set) on the first read: a retry cures it
        calls["n"] += 1
        if calls["n"] == 1:
            raise ShardReadError(path, 0, OSError(errno.EIO, "Input/output error"))
        yield from real(path, **kw)

    monkeypatch.setattr(score_mod, "iter_records", eio_once)
    (docs / "broken.parquet").unlink()
    (docs / "shard1.jsonl.gz").unlink()
    retried = score_corpus([str(docs)], str(tmp_path / "retried"), tiny_annotator, retries=1, **kwargs)
    assert calls["n"] == 2 and retried["unreadable_shards"] == [] and retried["scored"] == 20
    assert _score_files(str(tmp_path / "retried")) == {"shard0.scores.jsonl":
                                                       (tmp_path / "out" / "shard0.scores.jsonl").read_bytes()}


def test_default_threads_split_cores_only_when_openmp_threads_sleep(monkeypatch):
    from megasnow.quality.score import default_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert default_threads("cpu", 1) == 1  # spinning OpenMP threads: one (measured 0.6-0.7x with two when busy)
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert [default_threads("cpu", w) for w in (1, 2, 3, 8)] == [4, 2, 1, 1]
    assert default_threads("cuda", 1) == 1
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert default_threads("cpu", 1) == 1


def test_rerun_refuses_scores_of_another_annotator_or_a_changed_shard(tiny_annotator, tmp_path, one_thread, capsys):
    """Issue: a rerun into an --output holding another annotator's scores (or scores of a changed shard) kept them
    as done. Each shard's stats record the annotator's content identity and the input's; a copy of the annotator
    folder or a touched input is the same, another annotator or changed bytes are refused unless overwrite."""
    import shutil

    from megasnow.errors import UserError
    from megasnow.quality.annotator import save_annotator

    docs = str(tmp_path / "docs")
    _make_shards(docs, [6, 6])
    out = str(tmp_path / "scores")
    kwargs = dict(chunk_docs=50, threads=1, progress=False)
    first = score_corpus([docs], out, tiny_annotator, **kwargs)
    assert first["shards_scored_now"] == 2
    before = _score_files(out)

    copy = str(tmp_path / "copy")
    shutil.copytree(tiny_annotator, copy)  # new paths and mtimes, same content: not another annotator
    os.utime(os.path.join(docs, "shard0.jsonl"), (1, 1))  # same bytes, another mtime: not a changed input
    assert score_corpus([docs], out, copy, **kwargs)["shards_scored_now"] == 0
    assert _score_files(out) == before
    capsys.readouterr()
    noop = score_corpus([docs], out, tiny_annotator, **dict(kwargs, progress="log"))
    assert noop["rate_this_run"] is None and capsys.readouterr().err == ""  # no "score: done 0 docs" line

    other = load_annotator(tiny_annotator)
    with torch.no_grad():
        other.head.weight.mul_(-1.0)
    other_folder = str(tmp_path / "other")
    save_annotator(other, other_folder)
    with pytest.raises(UserError) as e:
        score_corpus([docs], out, other_folder, **kwargs)
    assert f"--output {out} holds scores that do not match this run: 2 shard(s) were scored by another annotator" \
        in str(e.value) and "--overwrite" in str(e.value) and other_folder in str(e.value)
    assert _score_files(out) == before  # refused: nothing changed
    again = score_corpus([docs], out, other_folder, overwrite=True, **kwargs)
    assert again["shards_scored_now"] == 2 and again["annotator"] == other_folder
    assert _score_files(out) == _score_files(score_corpus([docs], str(tmp_path / "fresh"), other_folder, **kwargs)
                                             and str(tmp_path / "fresh"))
    assert _score_files(out) != before

    with open(os.path.join(docs, "shard1.jsonl"), "a") as f:
        f.write(json.dumps({"id": "new", "text": "def g():\n    return 2\n"}) + "\n")
    with pytest.raises(UserError, match=r"1 shard\(s\) have an input shard that changed since it was scored "
                                        r"\(first: .*shard1.jsonl\)"):
        score_corpus([docs], out, other_folder, **kwargs)
    with pytest.raises(UserError, match=r"were scored with text_field='text' \(this run: 'body'\)"):
        score_corpus([docs], out, other_folder, text_field="body", **kwargs)
    assert score_corpus([docs], out, other_folder, overwrite=True, **kwargs)["shards_scored_now"] == 1
