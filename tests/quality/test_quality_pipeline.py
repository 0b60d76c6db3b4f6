"""Score -> select -> binarize: two local scoring workers give the one-worker scores byte for byte, and the
selected shards go straight into tools/preprocess_data.py."""
import glob
import json
import os
import subprocess
import sys

import pytest
import torch

from megasnow.curate.executors import shutdown_local_pool
from megasnow.quality.score import score_corpus
from tests.quality.machine_corpus import machine_negatives, stdlib_functions, train_tiny_tokenizer, write_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _outputs(folder):
    return {os.path.relpath(p, folder): open(p, "rb").read() for p in sorted(glob.glob(os.path.join(folder, "*.scores.jsonl")))}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_annotator):
    """Three shards of Python functions and C/config chunks, scored by one in-process worker."""
    root = tmp_path_factory.mktemp("pipeline")
    texts = [("python", t) for t in stdlib_functions(30, seed=31)] + [("c", t) for t in machine_negatives(30, seed=32)]
    for s in range(3):
        write_jsonl(str(root / "docs" / f"part{s}.jsonl"),
                    [{"id": f"{s}-{i}", "text": t, "lang": lang} for i, (lang, t) in enumerate(texts[s::3])])
    before = torch.get_num_threads()
    score_corpus([str(root / "docs")], str(root / "scores1"), tiny_annotator, threads=1, progress=False)
    torch.set_num_threads(before)
    return root


def test_two_local_workers_give_the_same_scores_as_one(corpus, tiny_annotator):
    try:  # one torch thread per worker, as in the one-worker run: bitwise-equal arithmetic
        summary = score_corpus([str(corpus / "docs")], str(corpus / "scores2"), tiny_annotator, workers=2, threads=1)
    finally:
        shutdown_local_pool()
    assert summary["shards_scored_now"] == 3 and summary["scored"] == 60
    one, two = _outputs(str(corpus / "scores1")), _outputs(str(corpus / "scores2"))
    assert sorted(one) == ["part0.scores.jsonl", "part1.scores.jsonl", "part2.scores.jsonl"] and one == two


def test_selected_shards_binarize_with_preprocess_data(corpus, tmp_path):
    from megasnow.data.indexed import IndexedDataset
    from megasnow.data.tokenizer import load_tokenizer
    from megasnow.quality.selection import select_documents

    docs = [json.loads(line) for p in sorted(glob.glob(str(corpus / "docs" / "*.jsonl"))) for line in open(p)]
    tok_path = train_tiny_tokenizer(str(tmp_path / "tok.json"), [d["text"] for d in docs])
    tok = load_tokenizer(tok_path)
    total = sum(len(tok.encode(d["text"])) for d in docs)
    report = select_documents([str(corpus / "docs")], str(corpus / "scores1"), str(tmp_path / "phase2"), tok_path,
                              total // 3)
    selected_dir = str(tmp_path / "phase2" / "selected")
    subprocess.run([sys.executable, "tools/preprocess_data.py", "--input", selected_dir, "--tokenizer-model", tok_path,
                    "--append-eod", "--output-prefix", str(tmp_path / "phase2_data"), "--workers", "1", "--no-progress"],
                   cwd=REPO, check=True, capture_output=True, timeout=300)

    ds = IndexedDataset(str(tmp_path / "phase2_data_text_document"))
    selected = [json.loads(line) for p in sorted(glob.glob(os.path.join(selected_dir, "*.jsonl"))) for line in open(p)]
    assert len(ds) == len(selected) == report["selected_documents"] > 0
    seqs = [ds[i].tolist() for i in range(len(ds))]
    assert all(s[-1] == tok.eod_id for s in seqs)
    # Binarized token counts are the ones the token budget was met with (plus one EOD per document).
    assert sum(len(s) - 1 for s in seqs) == report["selected_tokens"] >= total // 3
    assert [tok.decode(s[:-1]) for s in seqs] == [d["text"] for d in selected]
