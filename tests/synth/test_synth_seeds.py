"""Seeds: per-language quotas (Python share + phase-1 mix), top-scored first, OSS-Instruct line snippets and
document heads, determinism, bad records reported with file:line, scores joined from annotate.py's layout."""
import json
import os

import pytest

from megasnow.config import from_dict
from megasnow.curate.documents import repo_documents
from megasnow.errors import UserError
from megasnow.synth.config import SeedsConfig
from megasnow.synth.seeds import (check_inputs, head_snippet, language_shares, largest_remainder, load_language_weights,
                                  plan_seeds, split_document, TokenCounter)
from tests.curate.corpus import stdlib_file

PY_FILES = ["json/decoder.py", "json/encoder.py", "json/scanner.py", "json/tool.py", "email/quoprimime.py",
            "email/base64mime.py", "email/charset.py", "email/iterators.py"]


def java_file(i):
    return (f"package demo;\n\npublic class C{i} {{\n" + "".join(
        f"    int m{k}(int x) {{\n        return x * {k + i};\n    }}\n\n" for k in range(12)) + "}\n")


def go_file(i):
    return f"package demo\n\n" + "".join(f"func F{i}_{k}(x int) int {{\n\treturn x + {k}\n}}\n\n" for k in range(10))


def write_seed_docs(path, bad_lines=True):
    """Curated documents: 8 Python (stdlib, 2 files each), 6 Java, 3 Go; scores decrease down the file."""
    docs = []
    for i in range(4):
        files = [{"path": p, "content": stdlib_file(p), "id": p} for p in PY_FILES[2 * i:2 * i + 2]]
        docs += repo_documents(files, "python", f"py/repo{i}", 0, 10**9)
    for i in range(4, 8):
        docs += repo_documents([{"path": "x.py", "content": stdlib_file(PY_FILES[i]), "id": "x"}], "python",
                               f"py/repo{i}", 0, 10**9)
    docs += [repo_documents([{"path": f"C{i}.java", "content": java_file(i), "id": i}], "java", f"j/r{i}", 0,
                            10**9)[0] for i in range(6)]
    docs += [repo_documents([{"path": f"f{i}.go", "content": go_file(i), "id": i}], "Go", f"g/r{i}", 0,
                            10**9)[0] for i in range(3)]
    lines = []
    for k, d in enumerate(docs):
        d["quality_score"] = round(1.0 - k / 100, 3) if d["lang"] != "java" else round(0.1 * k, 3)
        lines.append(json.dumps(d))
    if bad_lines:
        lines.insert(2, "{not json")
        lines.insert(5, json.dumps({"text": "print(1)\n", "lang": "brainfork"}))
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return docs


def write_stats(path, **bytes_by_lang):
    stats = {"stages": {"documents": {lang: {"files_in": 1, "bytes_in": b, "files_out": 1, "bytes_out": b,
                                             "removed": {}} for lang, b in bytes_by_lang.items()}}}
    with open(path, "w") as f:
        json.dump(stats, f)


def seeds_cfg(tmp_path, **kw):
    return from_dict(SeedsConfig, {"documents": [str(tmp_path / "seeds.jsonl")], **kw})


@pytest.fixture
def seed_docs(tmp_path):
    return write_seed_docs(tmp_path / "seeds.jsonl")


def test_quotas_python_half_rest_in_phase1_proportions(tmp_path, seed_docs):
    write_stats(tmp_path / "stats.json", python=5000, java=300, go=100, rust=999)
    plan = plan_seeds(seeds_cfg(tmp_path, num_seeds=16, language_stats=str(tmp_path / "stats.json")))
    assert plan.shares == pytest.approx({"python": 0.5, "java": 0.375, "go": 0.125})
    assert plan.target == {"python": 8, "java": 6, "go": 2}
    langs = [s.lang for s in plan.seeds]
    assert {lang: langs.count(lang) for lang in set(langs)} == plan.target
    assert plan.available == {"python": 8, "java": 6, "go": 3}


def test_selection_report_gives_the_phase1_mix(tmp_path):
    with open(tmp_path / "report.json", "w") as f:
        json.dump({"languages": {"python": {"phase1_tokens": 10}, "go": {"phase1_tokens": 3},
                                 "java": {"phase1_tokens": 1}}}, f)
    assert load_language_weights(str(tmp_path / "report.json")) == {"python": 10.0, "go": 3.0, "java": 1.0}
    with open(tmp_path / "bad.json", "w") as f:
        json.dump({"something": 1}, f)
    with pytest.raises(UserError, match="bad.json"):
        load_language_weights(str(tmp_path / "bad.json"))


def test_shares_and_rounding():
    assert language_shares(["go", "python"], {"go": 1.0}, 0.7) == {"python": 0.7, "go": pytest.approx(0.3)}
    assert language_shares(["python"], {}, 0.5) == {"python": 1.0}
    assert language_shares(["c", "go"], {"c": 3.0, "go": 1.0}, 0.5) == {"c": 0.75, "go": 0.25}
    counts = largest_remainder({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, 10)
    assert sum(counts.values()) == 10 and sorted(counts.values()) == [3, 3, 4]


def test_top_scored_documents_first_and_mix_from_seed_documents(tmp_path, seed_docs):
    plan = plan_seeds(seeds_cfg(tmp_path, num_seeds=6, python_fraction=0.5))
    # without stats the other languages share by their seed-document counts: java 6, go 3
    assert plan.target == {"python": 3, "java": 2, "go": 1}
    by_lang = {}
    for s in plan.seeds:
        by_lang.setdefault(s.lang, []).append(s.doc_id)
    assert by_lang["python"] == ["python/py/repo0/0", "python/py/repo1/0", "python/py/repo2/0"]
    assert by_lang["java"] == ["java/j/r5/0", "java/j/r4/0"]  # java scores rise down the file
    # interleaved: the first seeds already hold every language
    assert {s.lang for s in plan.seeds[:3]} == {"python", "java", "go"}


def test_line_snippets_are_consecutive_lines_of_one_file(tmp_path, seed_docs):
    plan = plan_seeds(seeds_cfg(tmp_path, num_seeds=40, min_lines=3, max_lines=9))
    files = {d["id"]: [c for _, c in split_document(d["text"])] for d in seed_docs}
    lengths = set()
    for s in plan.seeds:
        n = len(s.text.split("\n"))
        assert 1 <= n <= 9 and s.text.strip()
        assert any(s.text in f for f in files[s.doc_id])
        lengths.add(n)
    assert len(lengths) > 3  # random lengths, not a constant
    # more seeds than Python documents: documents are reused with new snippets (occurrence 1, 2, ...)
    ids = [s.seed_id for s in plan.seeds]
    assert len(set(ids)) == len(ids) and any(i.endswith("#1") for i in ids)


def test_seeds_are_reproducible_and_follow_the_seed(tmp_path, seed_docs):
    a = plan_seeds(seeds_cfg(tmp_path, num_seeds=12)).seeds
    b = plan_seeds(seeds_cfg(tmp_path, num_seeds=12)).seeds
    c = plan_seeds(seeds_cfg(tmp_path, num_seeds=12, seed=99)).seeds
    assert a == b
    assert [s.text for s in a] != [s.text for s in c]


def test_head_mode_takes_the_first_file_up_to_n_tokens(tmp_path, seed_docs):
    plan = plan_seeds(seeds_cfg(tmp_path, num_seeds=30, mode="head", head_tokens=64))
    count = TokenCounter()
    heads = {d["id"]: split_document(d["text"])[0][1] for d in seed_docs}
    for s in plan.seeds:
        assert heads[s.doc_id].startswith(s.text)
        assert sum(count(line) + 1 for line in s.text.split("\n")) <= 64
    # one head per document: the quota is capped at the documents available
    assert len(plan.seeds) == 8 + 6 + 3 and plan.target == {"python": 15, "java": 10, "go": 5}


def test_head_snippet_cuts_an_overlong_first_line():
    assert head_snippet("x " * 1000 + "\nmore\n", 10, TokenCounter()) == ("x " * 20).rstrip()


def test_bad_records_are_skipped_and_reported_with_file_and_line(tmp_path, seed_docs, capsys):
    plan = plan_seeds(seeds_cfg(tmp_path, num_seeds=4))
    path = str(tmp_path / "seeds.jsonl")
    assert plan.read["skipped_records"] == 2
    assert f"{path}:3: bad JSON" in " ".join(plan.read["skipped_examples"])
    assert f"{path}:6: unknown language in field 'lang': 'brainfork'" in plan.read["skipped_examples"]
    err = capsys.readouterr().err
    assert f"warning: seed record skipped: {path}:3: bad JSON" in err


def test_progress_line_ends_with_the_count_read(tmp_path, seed_docs, capsys):
    plan = plan_seeds(seeds_cfg(tmp_path, num_seeds=4), progress=True)
    err = capsys.readouterr().err
    # the bar's last frame stays (a log used to show only its first one, "0doc")
    assert plan.read["records"] == 18
    assert err.split("\r")[-1].startswith(f"seed documents: {plan.read['records']}doc ["), err


def test_missing_seed_inputs_name_the_key_or_flag(tmp_path, seed_docs):
    cases = [({"documents": [str(tmp_path / "nope")]}, "seeds.documents: input "),
             ({"scores": str(tmp_path / "nope")}, "seeds.scores: "),
             ({"language_stats": str(tmp_path / "nope")}, "seeds.language_stats: "),
             ({"mode": "head", "tokenizer": str(tmp_path / "nope")}, "seeds.tokenizer: ")]
    for kw, start in cases:
        with pytest.raises(UserError) as e:
            check_inputs(seeds_cfg(tmp_path, **kw))
        assert str(e.value).startswith(start) and str(tmp_path / "nope") in str(e.value), str(e.value)
    with pytest.raises(UserError, match=r"^--seeds: input '.*nope' matches no file"):
        check_inputs(seeds_cfg(tmp_path, documents=[str(tmp_path / "nope")]), {"seeds.documents": "--seeds"})


def test_no_usable_documents_is_a_user_error(tmp_path):
    (tmp_path / "seeds.jsonl").write_text('{"text": "", "lang": "python"}\n')
    with pytest.raises(UserError, match="no usable seed documents"):
        plan_seeds(seeds_cfg(tmp_path))


def test_scores_folder_is_joined_by_position(tmp_path):
    os.makedirs(tmp_path / "docs")
    docs = write_seed_docs(tmp_path / "docs" / "shard0.jsonl", bad_lines=False)
    os.makedirs(tmp_path / "scores")
    with open(tmp_path / "scores" / "shard0.scores.jsonl", "w") as f:
        for pos, d in enumerate(docs, 1):  # JSONL positions are 1-based line numbers
            score = None if pos == 1 else pos / 100  # the later the better; the first was not scored
            f.write(json.dumps({"id": d["id"], "score": score, "lang": d["lang"], "pos": pos}) + "\n")
    (tmp_path / "scores" / "shard0.stats.json").write_text("{}")  # annotate.py writes it beside the scores
    cfg = from_dict(SeedsConfig, {"documents": [str(tmp_path / "docs")], "scores": str(tmp_path / "scores"),
                                  "num_seeds": 2, "python_fraction": 1.0, "languages": ["python"]})
    plan = plan_seeds(cfg)
    assert [s.doc_id for s in plan.seeds] == ["python/py/repo7/0", "python/py/repo6/0"]
    assert plan.read["skipped_by_reason"] == {"no score (skipped by the annotator)": 1}


def test_split_document():
    assert split_document("<repo_name>o/r<file_sep>a.py\nx = 1\n<file_sep>b/c.py\ny\n") == [("a.py", "x = 1\n"),
                                                                                          ("b/c.py", "y\n")]
    assert split_document("plain code\n") == [("", "plain code\n")]


def test_a_truncated_compressed_seed_shard_keeps_its_readable_records(tmp_path, capsys):
    """A .jsonl.gz cut mid-stream (a copy that died): the records before the cut are seeds, the damage is one
    warning naming the file, and the seeds drawn are those an intact file of just those records gives."""
    import gzip

    docs = write_seed_docs(tmp_path / "full.jsonl", bad_lines=False)
    whole = gzip.compress((tmp_path / "full.jsonl").read_bytes())
    (tmp_path / "seeds.jsonl.gz").write_bytes(whole[:len(whole) * 2 // 3])
    cfg = from_dict(SeedsConfig, {"documents": [str(tmp_path / "seeds.jsonl.gz")], "num_seeds": 4})
    plan = plan_seeds(cfg)
    err = capsys.readouterr().err
    damaged = [line for line in err.splitlines() if str(tmp_path / "seeds.jsonl.gz") in line]
    assert len(damaged) == 1 and damaged[0].startswith("warning: "), err
    readable = plan.read["records"]
    assert 0 < readable < len(docs)
    with open(tmp_path / "intact.jsonl", "w") as f:  # the same readable records, undamaged
        f.write("".join(json.dumps(d) + "\n" for d in docs[:readable]))
    intact = plan_seeds(from_dict(SeedsConfig, {"documents": [str(tmp_path / "intact.jsonl")], "num_seeds": 4}))
    assert [s.text for s in plan.seeds] == [s.text for s in intact.seeds]
