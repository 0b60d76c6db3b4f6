#!/usr/bin/env python
"""Inputs for examples/recipe/local-cpu.yaml from real code on this machine, built with the quickstart's own stages:
staged source (Python stdlib packages, C headers, Node modules) -> tools/curate.py -> SentencePiece tokenizer ->
phase-1 / held-out split, plus annotator positives (documented standard-library functions; no benchmark).

  python examples/recipe/prepare_local.py [--workdir runs/recipe/data] [--positives 250]
Every stage skips outputs that exist (the quickstart's rule).
"""
import argparse
import importlib.util
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# The corpus the recorded evidence (benchmarks/results/recipe.md) was built from: the quickstart's full-mode
# settings of that day, pinned here so the quickstart can be resized without changing this corpus.
CORPUS = dict(corpus_mb=6.0, max_file_kb=16, repo_kb=8, vocab=2048)


def quickstart_module():
    """examples/quickstart.py as a module: its corpus, curation, tokenizer and phase-split stages are reused."""
    spec = importlib.util.spec_from_file_location("megasnow_quickstart", os.path.join(REPO, "examples",
                                                                                      "quickstart.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    missing = [n for n in ("stage_repositories", "curate", "train_tokenizer", "split_phases",
                           "stdlib_functions") if not hasattr(mod, n)]
    if missing:
        raise SystemExit(f"error: examples/quickstart.py no longer defines {missing}; update prepare_local.py")
    return mod


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=os.path.join("runs", "recipe", "data"))
    ap.add_argument("--positives", type=int, default=250, help="documented stdlib functions as annotator positives")
    args = ap.parse_args(argv)
    qs = quickstart_module()
    s = CORPUS
    work = os.path.abspath(args.workdir)
    os.makedirs(work, exist_ok=True)
    repos = os.path.join(work, "repos")
    qs.stage_repositories(repos, int(s["corpus_mb"] * 1e6), s["max_file_kb"] * 1000, s["repo_kb"] * 1000)
    docs = qs.curate(repos, os.path.join(work, "curated"))
    tokenizer = qs.train_tokenizer(docs, os.path.join(work, "tokenizer", "code"), s["vocab"])
    phase1, valid = qs.split_phases(docs, os.path.join(work, "phases"), unused_fraction=0.1)
    pos = os.path.join(work, "positives", "stdlib_functions.jsonl")
    if not os.path.exists(pos):
        from megasnow.utils.atomic import atomic_write_text

        texts = qs.stdlib_functions(args.positives, seed=0)
        atomic_write_text(pos, "".join(json.dumps({"text": t}) + "\n" for t in texts))
    with open(pos, encoding="utf-8") as f:
        n_pos = sum(1 for line in f if line.strip())
    print(f"tokenizer:  {tokenizer}\nphase 1:    {phase1}\nheld-out:   {valid}\n"
          f"positives:  {pos} ({n_pos} documented standard-library functions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
