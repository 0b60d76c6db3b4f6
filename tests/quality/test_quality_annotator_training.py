"""Annotator training on a small real set, the self-contained folder format, and its error messages."""
import json
import os
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from megasnow.quality.annotator import AnnotatorError, load_annotator
from megasnow.quality.train import predict_token_lists
from megasnow.quality.training_data import (
    PositiveSource,
    balanced_split,
    build_training_set,
    extract_code,
    format_instruction,
)
from tests.quality.machine_corpus import write_jsonl


def test_frozen_training_separates_quality_code_from_random_files(trained_annotator):
    folder, metrics, heldout, _ = trained_annotator
    assert metrics["heldout"]["roc_auc"] >= 0.8
    assert metrics["heldout"]["accuracy"] >= 0.75
    assert metrics["heldout_examples"] == len(heldout) and metrics["heldout"]["positives"] == len(heldout) // 2
    # The folder loads on its own and reproduces the saved held-out metric exactly.
    annotator = load_annotator(folder)
    probs = predict_token_lists(annotator, annotator.encode_texts([e.text for e in heldout]))
    from megasnow.quality.metrics import roc_auc

    assert roc_auc([e.label for e in heldout], probs) == pytest.approx(metrics["heldout"]["roc_auc"], abs=1e-6)
    saved = json.load(open(os.path.join(folder, "metrics.json")))
    assert saved["heldout"]["roc_auc"] == pytest.approx(metrics["heldout"]["roc_auc"])
    assert annotator.config.max_length == 64 and annotator.config.pooling == "mean"


def test_training_set_is_balanced_deduplicated_and_seeded(training_corpus, tmp_path):
    src = PositiveSource([training_corpus["positives"]])
    train, heldout, stats = build_training_set([src], [training_corpus["documents"]], 0.25, seed=3)
    labels = [e.label for e in train + heldout]
    assert labels.count(1) == labels.count(0) == stats["positives_available"]
    assert sum(e.label for e in heldout) == len(heldout) // 2
    assert not {e.text for e in train} & {e.text for e in heldout}
    again, _, _ = build_training_set([src], [training_corpus["documents"]], 0.25, seed=3)
    assert [e.text for e in again] == [e.text for e in train]
    other, _, _ = build_training_set([src], [training_corpus["documents"]], 0.25, seed=4)
    assert [e.text for e in other] != [e.text for e in train]
    with pytest.raises(ValueError, match="need both classes"):
        balanced_split([], train, 0.1)


def test_instruction_data_becomes_a_code_document(tmp_path):
    solution = "Here is the code:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
    doc = format_instruction("Write add.\n\nIt adds two numbers.", solution)
    assert doc == "# Write add.\n#\n# It adds two numbers.\n\ndef add(a, b):\n    return a + b\n"
    assert extract_code("no fences here") == "no fences here"
    path = write_jsonl(str(tmp_path / "inst.jsonl"), [{"q": "Sum a list.", "a": "def s(x):\n    return sum(x)"},
                                                       {"q": "Empty.", "a": "   "}])
    src = PositiveSource([path], kind="instruction", problem_field="q", solution_field="a", comment_prefix="// ")
    from megasnow.quality.training_data import load_positives
    from megasnow.utils.records import RecordError, SkipLog

    skips = SkipLog()
    (ex,) = load_positives([src], skips)
    assert ex.text == "// Sum a list.\n\ndef s(x):\n    return sum(x)\n" and ex.label == 1
    with pytest.raises(RecordError, match=r"inst.jsonl:1: no 'problem' field"):
        load_positives([PositiveSource([path], kind="instruction")])


def test_mismatched_or_incomplete_annotator_folders_fail_clearly(trained_annotator, tmp_path):
    folder, _, _, _ = trained_annotator
    with pytest.raises(AnnotatorError, match="does not exist"):
        load_annotator(str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AnnotatorError, match="no annotator.json"):
        load_annotator(str(empty))

    def broken(name):
        dst = tmp_path / name
        shutil.copytree(folder, dst)
        return dst

    no_head = broken("no_head")
    os.unlink(no_head / "head.safetensors")
    with pytest.raises(AnnotatorError, match="incomplete: no head.safetensors"):
        load_annotator(str(no_head))

    no_weights = broken("no_weights")
    os.unlink(no_weights / "encoder" / "model.safetensors")
    with pytest.raises(AnnotatorError, match="has no weights"):
        load_annotator(str(no_weights))

    wrong_head = broken("wrong_head")
    head = load_file(str(wrong_head / "head.safetensors"))
    save_file({"weight": head["weight"][:, :100].contiguous(), "bias": head["bias"]}, str(wrong_head / "head.safetensors"))
    with pytest.raises(AnnotatorError, match=r"head tensors .* do not match"):
        load_annotator(str(wrong_head))

    wrong_size = broken("wrong_size")
    meta = json.load(open(wrong_size / "annotator.json"))
    meta["hidden_size"] = 768
    json.dump(meta, open(wrong_size / "annotator.json", "w"))
    with pytest.raises(AnnotatorError, match="hidden_size 768 but the encoder has 384"):
        load_annotator(str(wrong_size))

    wrong_format = broken("wrong_format")
    meta["format"] = "something-else"
    json.dump(meta, open(wrong_format / "annotator.json", "w"))
    with pytest.raises(AnnotatorError, match="format is 'something-else'"):
        load_annotator(str(wrong_format))


def test_cls_pooling_and_mean_pooling_differ_and_mean_ignores_padding():
    import torch

    from megasnow.quality.annotator import build_annotator

    annotator = build_annotator(pooling="mean", max_length=32).eval()
    ids = annotator.encode_texts(["def f(x):\n    return x + 1", "x = 1"])
    one, _ = annotator.collate([ids[1]])
    both, mask = annotator.collate(ids)  # the short text gets padded inside this batch
    with torch.no_grad():
        alone = annotator.embed(one, torch.ones_like(one))[0]
        padded = annotator.embed(both, mask)[1]
        np.testing.assert_allclose(alone.numpy(), padded.numpy(), atol=1e-5)
        annotator.config.pooling = "cls"
        cls = annotator.embed(one, torch.ones_like(one))[0]
    assert not torch.allclose(cls, alone)


def test_a_text_in_both_classes_is_dropped_from_both_and_counted(tmp_path):
    from megasnow.quality.training_data import text_key
    from tests.quality.machine_corpus import machine_negatives, stdlib_functions

    pos = stdlib_functions(6, seed=3)
    # Negatives as many as positives (so the reservoir takes them all): two are positives, one reformatted.
    neg = [pos[0], pos[1].replace("    ", "\t") + "\n"] + machine_negatives(4, seed=4)
    src = PositiveSource([write_jsonl(str(tmp_path / "pos.jsonl"), [{"text": t} for t in pos])])
    docs = write_jsonl(str(tmp_path / "docs.jsonl"), [{"text": t} for t in neg])
    train, heldout, stats = build_training_set([src], [docs], heldout_fraction=0.25, seed=0)
    assert stats["in_both_classes_dropped"] == 2
    assert stats["positives_available"] == 4 and stats["negatives_sampled"] == 4
    keys = {label: {text_key(e.text) for e in train + heldout if e.label == label} for label in (0, 1)}
    assert not keys[0] & keys[1]
    assert keys[1] == {text_key(t) for t in pos[2:]} and keys[0] == {text_key(t) for t in neg[2:]}
    assert len(heldout) == 2 and sum(e.label for e in heldout) == 1
