"""End-to-end curation of real stdlib code plus planted cases: dedup, decontamination, filters, bad input, documents."""
import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from megasnow.config import load_config
from megasnow.curate.config import CurateConfig
from megasnow.curate.documents import repo_documents
from megasnow.curate.pipeline import PipelineError, run_pipeline
from megasnow.data.special_tokens import FILE_SEP, REPO_NAME
from tests.curate.corpus import BAD_JSONL_LINES, copy_stdlib_repos, planted_records, write_jsonl

JAVA = """package demo;

public class Greeter {
    private final String name;

    public Greeter(String name) {
        this.name = name;
    }

    public String greet(String other) {
        return "Hello " + other + ", I am " + name;
    }
}
"""
GO = """package main

import "fmt"

func fib(n int) int {
	if n < 2 {
		return n
	}
	return fib(n-1) + fib(n-2)
}

func main() {
	fmt.Println(fib(20))
}
"""


def build_inputs(root):
    repos = copy_stdlib_repos(os.path.join(root, "repos"), ["json", "email"])
    bad = os.path.join(repos, "badrepo")
    os.makedirs(bad)
    with open(os.path.join(bad, "binary.py"), "wb") as f:
        f.write(b"x = 1\n\0\1\2\3" * 10)
    with open(os.path.join(bad, "latin1.py"), "wb") as f:
        f.write("name = 'caf\u00e9'\nprint(name)\n".encode("latin-1"))
    open(os.path.join(bad, "empty.py"), "w").close()
    with open(os.path.join(bad, "huge.py"), "w") as f:
        f.write("value = 12345\n" * 80_000)  # 1.1 MB > max_file_bytes
    os.symlink(os.path.join(repos, "json", "decoder.py"), os.path.join(bad, "link.py"))
    with open(os.path.join(bad, "ok.py"), "w") as f:
        f.write("def ok():\n    return 'fine'\n\n\nprint(ok())\n")
    stack = os.path.join(root, "stack")
    os.makedirs(stack)
    records, expected = planted_records()
    path = write_jsonl(os.path.join(stack, "planted.jsonl"), records, BAD_JSONL_LINES)
    with open(path, "rb") as f, gzip.open(path + ".gz", "wb") as g:
        g.write(f.read())
    os.unlink(path)
    table = pa.table({"content": [JAVA, GO], "max_stars_repo_name": ["ivan/demo", "ivan/demo"],
                      "max_stars_repo_path": ["src/Greeter.java", "cmd/fib.go"], "lang": ["Java", "Go"],
                      "ext": ["java", "go"], "max_stars_count": [7, 7]})
    pq.write_table(table, os.path.join(stack, "part-0.parquet"))
    return [repos, stack], records, expected


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("curate"))
    inputs, records, expected = build_inputs(root)
    out = os.path.join(root, "out")
    stats = run_pipeline(inputs, out, load_config(CurateConfig))
    return {"out": out, "stats": stats, "records": records, "expected": expected, "inputs": inputs}


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def documents(out):
    docs = []
    for name in sorted(os.listdir(os.path.join(out, "documents"))):
        docs += [(name, d) for d in read_jsonl(os.path.join(out, "documents", name))]
    return docs


def test_exact_and_near_duplicates_keep_the_most_starred(curated):
    exp = curated["expected"]
    clusters = read_jsonl(os.path.join(curated["out"], "duplicates.jsonl"))
    by_kept = {(c["kept"]["repo"], c["kept"]["path"]): c for c in clusters}
    exact = by_kept[exp["exact_kept"]]
    assert exact["kind"] == "exact" and exact["kept"]["stars"] == 50
    assert sorted((r["repo"], r["path"]) for r in exact["removed"]) == sorted(exp["exact_removed"])
    near = by_kept[exp["near_kept"]]
    assert near["kind"] == "near" and near["kept"]["stars"] == 100
    assert [(r["repo"], r["path"]) for r in near["removed"]] == exp["near_removed"]
    stats = curated["stats"]["stages"]
    # 2 planted copies + the repo folder's json/decoder.py and json/scanner.py, which lose to the 5000-star copies
    assert stats["exact_dedup"]["python"]["removed"]["exact_duplicate"] == 4
    lost = by_kept[("python/cpython", "Lib/json/decoder.py")]["removed"]
    assert [(r["repo"], r["path"], r["stars"]) for r in lost] == [("json", "decoder.py", None)]
    assert stats["near_dedup"]["python"]["removed"]["near_duplicate"] == 1
    assert curated["stats"]["dedup"]["near"]["bands"] == 25 and curated["stats"]["dedup"]["near"]["rows"] == 10


def test_humaneval_copies_removed_with_task_ids(curated):
    removals = read_jsonl(os.path.join(curated["out"], "decontamination.jsonl"))
    got = {(r["repo"], r["path"]): sorted({m["task_id"] for m in r["matches"]}) for r in removals}
    assert got == {k: [v] for k, v in curated["expected"]["decon"].items()}
    assert curated["stats"]["stages"]["decontaminate"]["python"]["removed"] == {"humaneval": 2}


def test_each_filter_counted(curated):
    removed = curated["stats"]["stages"]["filter"]["python"]["removed"]
    for reason in set(curated["expected"]["filters"].values()):
        assert removed.get(reason, 0) >= 1, (reason, removed)


def test_bad_inputs_counted_not_fatal(curated):
    bad = curated["stats"]["bad_input"]
    assert bad["binary"] == 2 and bad["oversized"] == 2 and bad["invalid UTF-8"] == 1 and bad["symlink"] == 1
    assert bad["empty"] >= 2  # empty.py, the blank record (and empty stdlib __init__ files)
    assert bad["malformed record (no string field 'content')"] == 1
    assert sum(v for k, v in bad.items() if k.startswith("bad JSON")) == 1
    examples = "\n".join(curated["stats"]["bad_input_examples"])
    assert "planted.jsonl.gz:" in examples and "binary.py: binary" in examples


def test_documents_grouped_by_language_then_repo_each_kept_file_once(curated):
    out = curated["out"]
    docs = documents(out)
    langs = {d["lang"] for _, d in docs}
    assert langs == {"python", "java", "go"}
    seen = []
    for fname, d in docs:
        assert fname.startswith(d["lang"] + "-")
        header = REPO_NAME + d["repo"]
        assert d["text"].startswith(header + FILE_SEP)
        pieces = d["text"][len(header):].split(FILE_SEP)[1:]
        assert [p.split("\n", 1)[0] for p in pieces] == d["paths"]
        seen += [(d["lang"], d["repo"], p) for p in d["paths"]]
    assert len(seen) == len(set(seen))
    repos_in_order = [(fname, d["repo"]) for fname, d in docs]
    assert repos_in_order == sorted(repos_in_order)  # one file per language, repos sorted inside it
    # every file that survived every stage is present: ingested minus all reported removals
    stats = curated["stats"]["stages"]
    assert len(seen) == stats["near_dedup"]["all"]["files_out"] == stats["documents"]["all"]["files_in"]
    dup_removed = {(r["repo"], r["path"]) for c in read_jsonl(os.path.join(out, "duplicates.jsonl"))
                   for r in c["removed"]}
    decon = {(r["repo"], r["path"]) for r in read_jsonl(os.path.join(out, "decontamination.jsonl"))}
    kept = {(r, p) for _, r, p in seen}
    assert not kept & (dup_removed | decon)
    for expected in [("json", "encoder.py"), ("python/cpython", "Lib/json/decoder.py"), ("badrepo", "ok.py"),
                     ("ivan/demo", "cmd/fib.go")]:
        assert expected in kept
    assert ("bob/colors", "src/colorsys.py") in kept and ("erin/algos", "heapq_bisect.py") in kept
    # contents are byte-exact copies of the inputs
    doc = next(d for _, d in docs if d["repo"] == "json")  # decoder.py lost to the 5000-star copy
    with open(os.path.join(curated["inputs"][0], "json", "encoder.py"), encoding="utf-8") as f:
        assert FILE_SEP + "encoder.py\n" + f.read() in doc["text"] + FILE_SEP


def test_repo_documents_seeded_order_and_size_policy():
    files = [{"path": f"f{i}.py", "content": f"x{i} = {i}\n" * 20, "id": str(i)} for i in range(12)]
    a = repo_documents(files, "python", "o/r", seed=1, max_chars=10**9)
    b = repo_documents(list(reversed(files)), "python", "o/r", seed=1, max_chars=10**9)
    c = repo_documents(files, "python", "o/r", seed=2, max_chars=10**9)
    assert len(a) == 1 and a == b and a[0]["paths"] != c[0]["paths"]
    assert sorted(a[0]["paths"]) == sorted(f["path"] for f in files) and a[0]["paths"] != sorted(a[0]["paths"])
    split = repo_documents(files, "python", "o/r", seed=1, max_chars=500)
    assert [p for d in split for p in d["paths"]] == a[0]["paths"]  # same order, cut into pieces
    assert all(len(d["text"]) <= 500 for d in split) and len(split) > 1
    assert all(d["text"].startswith(REPO_NAME + "o/r" + FILE_SEP) for d in split)
    assert [d["id"] for d in split] == [f"python/o/r/{k}" for k in range(len(split))]


def test_rerun_skips_everything_and_refuses_other_config(curated):
    out = curated["out"]
    docs_dir = os.path.join(out, "documents")
    before = {n: open(os.path.join(docs_dir, n), "rb").read() for n in os.listdir(docs_dir)}
    stats = run_pipeline(curated["inputs"], out, load_config(CurateConfig))
    assert set(stats["tasks_executed"].values()) == {0}
    after = {n: open(os.path.join(docs_dir, n), "rb").read() for n in os.listdir(docs_dir)}
    assert before == after
    with pytest.raises(PipelineError, match="different config"):
        run_pipeline(curated["inputs"], out, load_config(CurateConfig, overrides=["near_dedup.threshold=0.8"]))


def test_documents_feed_tokenizer_training_and_binarization(curated, tmp_path):
    """The curated JSONL goes straight into tools/train_tokenizer.py and tools/preprocess_data.py."""
    import subprocess
    import sys

    from megasnow.data.indexed import IndexedDataset
    from megasnow.data.tokenizer import load_tokenizer

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    docs_dir = os.path.join(curated["out"], "documents")
    prefix = str(tmp_path / "tok")
    run = lambda *a: subprocess.run([sys.executable, *a], cwd=root, check=True, capture_output=True, timeout=300)
    run("tools/train_tokenizer.py", "--input", docs_dir, "--output-prefix", prefix, "--vocab-size", "1000")
    run("tools/preprocess_data.py", "--input", docs_dir, "--tokenizer-model", prefix + ".model", "--append-eod",
        "--output-prefix", str(tmp_path / "data"), "--no-progress")
    tok = load_tokenizer(prefix + ".model")
    ds = IndexedDataset(str(tmp_path / "data_text_document"))
    docs = [d for _, d in documents(curated["out"])]
    assert len(ds) == len(docs)
    seqs = [ds[i].tolist() for i in range(len(ds))]
    assert all(s[0] == tok.token_to_id(REPO_NAME) and s[-1] == tok.eod_id for s in seqs)
    decoded = {tok.decode(s[:-1]): s for s in seqs}  # exact round trip of every document
    assert sorted(decoded) == sorted(d["text"] for d in docs)
    for d in docs:  # the markers are single special tokens: one FILE_SEP id per file
        assert decoded[d["text"]].count(tok.token_to_id(FILE_SEP)) == len(d["paths"])
