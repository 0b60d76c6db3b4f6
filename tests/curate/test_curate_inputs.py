"""Curation inputs and options: corrupt shards, .zst JSONL, repo-folder detection, whitespace-normalized exact dedup,
true-Jaccard verification in a full run, and the example configs."""
import glob
import gzip
import json
import logging
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from megasnow.config import load_config
from megasnow.curate.config import CurateConfig
from megasnow.curate.pipeline import run_pipeline
from megasnow.curate.sources import plan_shards
from tests.curate.corpus import near_copy, stdlib_file, write_jsonl
from tests.curate.test_curate_resume import output_bytes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILES = ["csv.py", "textwrap.py", "shlex.py", "fnmatch.py", "glob.py", "colorsys.py", "bisect.py", "heapq.py",
         "json/decoder.py", "json/encoder.py", "json/scanner.py", "json/tool.py", "calendar.py", "string.py"]


def record(rel, content=None, repo=None):
    return {"content": stdlib_file(rel) if content is None else content, "max_stars_repo_name": repo or "py/" + rel,
            "max_stars_repo_path": rel, "lang": "Python", "ext": "py"}


def kept_paths(out):
    paths = set()
    for name in glob.glob(os.path.join(out, "documents", "*.jsonl")):
        with open(name, encoding="utf-8") as f:
            paths |= {(d["repo"], p) for d in map(json.loads, f) for p in d["paths"]}
    return paths


def test_corrupt_shards_are_counted_and_the_run_goes_on(tmp_path, caplog):
    stack = tmp_path / "stack"
    stack.mkdir()
    write_jsonl(str(stack / "a-good.jsonl"), [record(r) for r in FILES[:4]])
    cut_recs = [record(r) for r in FILES[4:]]
    packed = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in cut_recs))
    (stack / "b-cut.jsonl.gz").write_bytes(packed[: len(packed) // 2])  # truncated: EOFError mid-stream
    pq.write_table(pa.Table.from_pylist([record("this.py")]), str(stack / "c.parquet"))
    data = (stack / "c.parquet").read_bytes()
    (stack / "c.parquet").write_bytes(data[: len(data) // 2])  # no footer: ArrowInvalid

    with caplog.at_level(logging.WARNING):
        stats = run_pipeline([str(stack)], str(tmp_path / "out"), load_config(CurateConfig))
    unreadable = {os.path.basename(u["path"]): u for u in stats["unreadable_shards"]}
    assert sorted(unreadable) == ["b-cut.jsonl.gz", "c.parquet"]
    read = unreadable["b-cut.jsonl.gz"]["records_read"]
    assert 0 < read < len(cut_recs) and unreadable["b-cut.jsonl.gz"]["error"].startswith("EOFError")
    assert unreadable["c.parquet"]["records_read"] == 0 and "ArrowInvalid" in unreadable["c.parquet"]["error"]
    assert stats["bad_input"]["unreadable shard"] == 2
    assert any("b-cut.jsonl.gz" in e and "EOFError" in e for e in stats["bad_input_examples"])
    assert "b-cut.jsonl.gz" in caplog.text and "c.parquet" in caplog.text
    with open(tmp_path / "out" / "stats.json") as f:
        assert json.load(f)["unreadable_shards"] == stats["unreadable_shards"]
    # the records before the damage are kept (always the same ones: decoding is deterministic), the rest is lost
    assert stats["stages"]["ingest"]["all"]["files_in"] == 4 + read
    expected = {(r["max_stars_repo_name"], r["max_stars_repo_path"]) for r in [record(f) for f in FILES[:4]]
                + cut_recs[:read]}
    assert kept_paths(str(tmp_path / "out")) == expected
    again = run_pipeline([str(stack)], str(tmp_path / "again"), load_config(CurateConfig))
    assert output_bytes(str(tmp_path / "out")) == output_bytes(str(tmp_path / "again"))
    assert again["unreadable_shards"] == stats["unreadable_shards"]


def test_zst_jsonl_input_curates_like_plain(tmp_path):
    recs = [record(r) for r in FILES[:6]]
    os.makedirs(tmp_path / "plain")
    os.makedirs(tmp_path / "zst")
    write_jsonl(str(tmp_path / "plain" / "p.jsonl"), recs)
    raw = (tmp_path / "plain" / "p.jsonl").read_bytes()
    (tmp_path / "zst" / "p.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    plain = run_pipeline([str(tmp_path / "plain")], str(tmp_path / "out_plain"), load_config(CurateConfig))
    zst = run_pipeline([str(tmp_path / "zst")], str(tmp_path / "out_zst"), load_config(CurateConfig))
    assert zst["stages"]["ingest"]["all"]["files_in"] == 6 and zst["stages"] == plain["stages"]
    assert output_bytes(str(tmp_path / "out_zst")) == output_bytes(str(tmp_path / "out_plain"))


def test_repo_folder_with_package_json_is_repos_not_records(tmp_path):
    repos = tmp_path / "repos"
    (repos / "webapp").mkdir(parents=True)
    (repos / "package.json").write_text('{"name": "monorepo", "version": "1.0.0", "private": true}\n')
    (repos / "webapp" / "index.js").write_text("export function add(a, b) {\n  return a + b;\n}\n")
    cfg = load_config(CurateConfig)
    assert [s["kind"] for s in plan_shards([str(repos)], cfg.source)] == ["repos"]
    (repos / "data.jsonl").write_text(json.dumps(record("csv.py")) + "\n")  # now it is a folder of shards
    assert [s["kind"] for s in plan_shards([str(repos)], cfg.source)] == ["records"]
    (repos / "data.jsonl").unlink()
    forced = load_config(CurateConfig, overrides=["source.format=jsonl"])  # the user says .json files are shards
    assert [os.path.basename(s["path"]) for s in plan_shards([str(repos)], forced.source)] == ["package.json"]


def test_whitespace_normalized_exact_dedup(tmp_path):
    text = stdlib_file("colorsys.py")
    respaced = text.replace("    ", "\t").replace("\n\n", "\n \n")
    write_jsonl(str(tmp_path / "in.jsonl"), [record("colorsys.py", text, "a/x"), record("colorsys.py", respaced, "b/y"),
                                              record("csv.py")])
    overrides = ["near_dedup.enabled=false"]
    plain = run_pipeline([str(tmp_path / "in.jsonl")], str(tmp_path / "plain"),
                         load_config(CurateConfig, overrides=overrides))
    assert plain["stages"]["exact_dedup"]["python"]["removed"] == {}
    norm = run_pipeline([str(tmp_path / "in.jsonl")], str(tmp_path / "norm"),
                        load_config(CurateConfig, overrides=overrides + ["exact_dedup.normalize_whitespace=true"]))
    assert norm["stages"]["exact_dedup"]["python"]["removed"] == {"exact_duplicate": 1}
    assert kept_paths(str(tmp_path / "norm")) == {("a/x", "colorsys.py"), ("py/csv.py", "csv.py")}


def test_verify_jaccard_in_a_full_run_drops_lsh_false_positives(tmp_path):
    """With a loose LSH (64 bands x 2 rows) a pair at Jaccard ~0.5 becomes a candidate; verification keeps it."""
    from megasnow.curate.minhash import jaccard, shingle_set

    base = stdlib_file("bisect.py") + stdlib_file("heapq.py")
    lines = base.split("\n")
    partial = "\n".join(l[::-1] if i % 3 == 0 else l for i, l in enumerate(lines))
    assert 0.3 < jaccard(shingle_set(base), shingle_set(partial)) < 0.7
    assert jaccard(shingle_set(base), shingle_set(near_copy(base))) > 0.85
    write_jsonl(str(tmp_path / "in.jsonl"), [record("b.py", base, "a/base"), record("b.py", near_copy(base), "b/near"),
                                              record("b.py", partial, "c/partial"), record("csv.py")])
    loose = ["near_dedup.bands=64", "near_dedup.rows=2"]
    checked = run_pipeline([str(tmp_path / "in.jsonl")], str(tmp_path / "checked"),
                           load_config(CurateConfig, overrides=loose))
    near = checked["dedup"]["near"]
    assert near["verify_jaccard"] and near["candidate_pairs"] >= 2 and near["verified_pairs"] == 1
    assert checked["stages"]["near_dedup"]["python"]["removed"] == {"near_duplicate": 1}
    assert ("c/partial", "b.py") in kept_paths(str(tmp_path / "checked"))
    unchecked = run_pipeline([str(tmp_path / "in.jsonl")], str(tmp_path / "unchecked"),
                             load_config(CurateConfig, overrides=loose + ["near_dedup.verify_jaccard=false"]))
    assert unchecked["stages"]["near_dedup"]["python"]["removed"]["near_duplicate"] >= 2
    assert ("c/partial", "b.py") not in kept_paths(str(tmp_path / "unchecked"))


@pytest.mark.parametrize("name", ["stack_v1.yaml", "local_repos.yaml"])
def test_example_configs_load(name):
    cfg = load_config(CurateConfig, os.path.join(ROOT, "examples", "curation", name))
    assert cfg.near_dedup.verify_jaccard and cfg.near_dedup.threshold == 0.7
    if name == "stack_v1.yaml":
        assert cfg.source.format == "parquet" and cfg.source.repo_field == "max_stars_repo_name"
        assert cfg.filters.default.max_line_length == 1000 and cfg.decontamination.mode == "both"
    else:
        assert cfg.source.format == "repos" and cfg.workers == 2


def test_zst_frames_and_truncation(tmp_path):
    """Multi-frame .zst files read whole; a cut one raises ShardReadError after its complete lines (zstandard's
    own stream reader would just stop)."""
    from megasnow.utils.records import ShardReadError, iter_records

    lines = [json.dumps({"i": i, "pad": "x" * 200}).encode() + b"\n" for i in range(3000)]
    frames = [zstandard.ZstdCompressor().compress(b"".join(lines[:1000])),
              zstandard.ZstdCompressor().compress(b"".join(lines[1000:]))]
    (tmp_path / "two.jsonl.zst").write_bytes(b"".join(frames))
    assert [r["i"] for _, r in iter_records(str(tmp_path / "two.jsonl.zst"))] == list(range(3000))
    whole = b"".join(frames)
    (tmp_path / "cut.jsonl.zst").write_bytes(whole[: len(whole) * 3 // 4])
    got = []
    with pytest.raises(ShardReadError, match=r"cut.jsonl.zst: unreadable after \d+ records \(EOFError") as err:
        for _, rec in iter_records(str(tmp_path / "cut.jsonl.zst")):
            got.append(rec["i"])
    assert got == list(range(len(got))) and 1000 < len(got) < 3000 and err.value.records == len(got)
    assert not err.value.transient
