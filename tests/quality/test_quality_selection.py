"""Per-language selection: keeps the phase-1 language mix within 1 pp, meets the token budget, takes
each language's best-scored documents, and writes preprocess-ready shards plus a report."""
import glob
import json
import os
import re

import numpy as np
import pytest

from megasnow.data.tokenizer import load_tokenizer
from megasnow.quality.selection import SelectionError, select_documents
from tests.quality.machine_corpus import machine_negatives, stdlib_functions, train_tiny_tokenizer, write_jsonl

LANG_SIZES = {"python": 360, "c": 220, "cmake": 120}  # deliberately unbalanced phase-1 mix


def _texts_for(lang, n, rng):
    if lang == "python":
        base = stdlib_functions(200, seed=5)
    elif lang == "c":
        base = [t for t in machine_negatives(400, seed=6, chunk_chars=900) if "#" in t or ";" in t]
    else:
        base = machine_negatives(400, seed=8, chunk_chars=500)
    return [base[int(i)] + f"\n# doc {lang} {k}\n" for k, i in enumerate(rng.integers(0, len(base), size=n))]


@pytest.fixture(scope="module")
def scored_corpus(tmp_path_factory):
    """Three shards of multi-language documents, their scores files (seeded random scores in the
    scorer's format, a few unscorable documents) and a small BPE tokenizer.json."""
    root = tmp_path_factory.mktemp("selection")
    rng = np.random.default_rng(0)
    docs = []
    for lang, n in LANG_SIZES.items():
        docs += [{"id": f"{lang}-{k}", "text": t, "lang": lang, "repo": "m"} for k, t in enumerate(_texts_for(lang, n, rng))]
    order = rng.permutation(len(docs))
    docs = [docs[i] for i in order]
    for k in range(0, len(docs), 40):  # unscorable documents: must never be selected
        docs[k] = dict(docs[k], text="")
    tokenizer = train_tiny_tokenizer(str(root / "tok.json"), [d["text"] for d in docs[:300]])
    shards = np.array_split(np.arange(len(docs)), 3)
    for s, idx in enumerate(shards):
        shard_docs = [docs[i] for i in idx]
        write_jsonl(str(root / "docs" / f"part{s}.jsonl"), shard_docs)
        rows = []
        for pos, d in enumerate(shard_docs, 1):
            row = {"id": d["id"], "score": None, "lang": d["lang"], "pos": pos}
            if d["text"]:
                row["score"] = round(float(rng.random()), 7)
            else:
                row["skipped"] = "empty"
            rows.append(row)
        write_jsonl(str(root / "scores" / f"part{s}.scores.jsonl"), rows)
        with open(root / "scores" / f"part{s}.stats.json", "w") as f:
            json.dump({"documents": len(rows)}, f)
    return {"root": str(root), "docs": str(root / "docs"), "scores": str(root / "scores"), "tokenizer": tokenizer,
            "all": docs}


def _independent_token_shares(docs, tokenizer):
    per_lang = {}
    for d in docs:
        if d["text"]:
            per_lang[d["lang"]] = per_lang.get(d["lang"], 0) + len(tokenizer.encode(d["text"]))
    total = sum(per_lang.values())
    return {k: v / total for k, v in per_lang.items()}, total


@pytest.mark.parametrize("fraction", [0.25, 0.6])
def test_selection_keeps_language_mix_and_meets_budget(scored_corpus, tmp_path, fraction):
    tok = load_tokenizer(scored_corpus["tokenizer"])
    phase1_shares, total = _independent_token_shares(scored_corpus["all"], tok)
    budget = int(fraction * total)
    out = str(tmp_path / "phase2")
    report = select_documents([scored_corpus["docs"]], scored_corpus["scores"], out, scored_corpus["tokenizer"], budget)

    selected = []
    for path in sorted(glob.glob(os.path.join(out, "selected", "*.jsonl"))):
        selected += [json.loads(line) for line in open(path)]
    by_lang = {}
    for d in selected:
        by_lang[d["lang"]] = by_lang.get(d["lang"], 0) + len(tok.encode(d["text"]))
    selected_total = sum(by_lang.values())
    assert selected_total == report["selected_tokens"] >= budget
    assert selected_total - budget < 3 * 2000  # overshoot: at most one document per language
    for lang, share in phase1_shares.items():
        assert abs(by_lang[lang] / selected_total - share) <= 0.01, (lang, by_lang[lang] / selected_total, share)
    assert report["max_share_deviation_pp"] <= 1.0 and report["mix_within_tolerance"]

    # Ranking is within each language: every selected document beats every unselected one of its language.
    scores = {}
    for path in glob.glob(os.path.join(scored_corpus["scores"], "*.scores.jsonl")):
        for line in open(path):
            r = json.loads(line)
            scores[r["id"]] = r["score"]
    chosen = {d["id"] for d in selected}
    for lang in LANG_SIZES:
        sel = [scores[d["id"]] for d in scored_corpus["all"] if d["lang"] == lang and d["id"] in chosen]
        rest = [scores[d["id"]] for d in scored_corpus["all"] if d["lang"] == lang and d["id"] not in chosen and scores[d["id"]] is not None]
        assert min(sel) >= max(rest)
        assert report["languages"][lang]["threshold"] == pytest.approx(min(sel))
    # Selected records are the original documents (+ their score), ready for preprocess_data.py.
    originals = {d["id"]: d for d in scored_corpus["all"]}
    for d in selected:
        assert d["text"] and d["text"] == originals[d["id"]]["text"] and d["quality_score"] == scores[d["id"]]
    assert len(chosen) == len(selected) == report["selected_documents"]

    png = open(os.path.join(out, "score_histograms.png"), "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    md = open(os.path.join(out, "selection_report.md")).read()
    # the repetition advice in the form a trainer config takes (YAML), not the Python API
    assert "blend of the trainer config: `blend: [{path: data/phase2_selected_text_document, repeat: 4}]`" in md
    assert "BlendEntry" not in md and "| cmake |" in md


def test_selection_errors_name_the_problem(scored_corpus, tmp_path):
    with pytest.raises(SelectionError, match="exceeds the"):
        select_documents([scored_corpus["docs"]], scored_corpus["scores"], str(tmp_path / "a" / "sel"),
                         scored_corpus["tokenizer"], 10**12)
    assert not os.path.exists(tmp_path / "a")  # a failed run leaves nothing (no .token_counts either)
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine")
    with pytest.raises(SelectionError, match="exceeds the"):
        select_documents([scored_corpus["docs"]], scored_corpus["scores"], str(tmp_path / "kept"),
                         scored_corpus["tokenizer"], 10**12)
    assert os.listdir(tmp_path / "kept") == ["notes.txt"]  # an existing folder keeps only what it held
    # Scores that belong to another version of a shard are refused, naming the file and line.
    bad_scores = tmp_path / "bad_scores"
    bad_scores.mkdir()
    for path in glob.glob(os.path.join(scored_corpus["scores"], "*")):
        data = open(path).read()
        if path.endswith("part1.scores.jsonl"):
            rows = [json.loads(l) for l in data.splitlines()]
            rows[4]["id"] = "someone-else"
            data = "".join(json.dumps(r) + "\n" for r in rows)
        (bad_scores / os.path.basename(path)).write_text(data)
    with pytest.raises(SelectionError, match=r"part1.jsonl:5: document id '.*' but .*part1.scores.jsonl has 'someone-else'"):
        select_documents([scored_corpus["docs"]], str(bad_scores), str(tmp_path / "b"), scored_corpus["tokenizer"], 1000)
    with pytest.raises(SelectionError, match="have no scores"):
        select_documents([scored_corpus["docs"]], str(tmp_path / "empty"), str(tmp_path / "c"), scored_corpus["tokenizer"], 1000)


@pytest.mark.parametrize("text,value", [("12.5B", 12_500_000_000), ("300M", 300_000_000), ("40k", 40_000),
                                        ("1000", 1000), (7, 7)])
def test_token_counts_parse(text, value):
    from megasnow.quality.budget import parse_token_count

    assert parse_token_count(text) == value


def test_select_refuses_a_non_positive_budget_at_parse_time(scored_corpus, tmp_path, capsys):
    from megasnow.utils.cli import run_tool
    from tools.annotate import main

    for budget in ("0", "-5", "0.0001"):
        with pytest.raises(SystemExit) as e:
            main(["select", "--documents", scored_corpus["docs"], "--scores", scored_corpus["scores"],
                  "--tokenizer", scored_corpus["tokenizer"], "--budget-tokens", budget,
                  "--output", str(tmp_path / "o")])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "argument --budget-tokens:" in err and "(see annotate.py select --help)" in err, err
        if budget != "0.0001":  # a negative count is refused like zero, not as "not a token count"
            assert f"a token count must be positive, got '{budget}'" in err, err
    assert not os.path.exists(tmp_path / "o")
    # A budget over the scored tokens names the most it can be.
    assert run_tool(main, ["select", "--documents", scored_corpus["docs"], "--scores", scored_corpus["scores"],
                           "--tokenizer", scored_corpus["tokenizer"], "--budget-tokens", "1T",
                           "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert re.search(r"^error: token budget 1,000,000,000,000 exceeds the ([\d,]+) tokens of scored documents: "
                     r"lower --budget-tokens to at most \1, or score more documents$", err, re.M), err
    assert not os.path.exists(tmp_path / "o")


def test_select_cli_writes_report(scored_corpus, tmp_path, capsys):
    from tools.annotate import main

    out = str(tmp_path / "cli")
    assert main(["select", "--documents", scored_corpus["docs"], "--scores", scored_corpus["scores"],
                 "--tokenizer", scored_corpus["tokenizer"], "--budget-tokens", "20k", "--output", out]) == 0
    report = json.load(open(os.path.join(out, "selection_report.json")))
    assert report["budget_tokens"] == 20000 and report["selected_tokens"] >= 20000
    printed, err = capsys.readouterr()
    assert "Phase-2 selection report" in printed
    # not a terminal: whole progress lines, no tqdm carriage returns (a log file gets whole lines)
    assert "\r" not in err and "count tokens: done 3 tasks in " in err and "write selected: done" in err, err
