"""Full fine-tuning (encoder + head) on a handful of real examples, and `tools/annotate.py train` end to end."""
import json
import os

import numpy as np
import pytest

from megasnow.quality.annotator import load_annotator, load_encoder
from megasnow.quality.train import TrainConfig, predict_token_lists, train_annotator
from megasnow.quality.training_data import Example, balanced_split, read_examples, text_key
from tests.quality.machine_corpus import machine_negatives, stdlib_functions, write_jsonl


def test_full_finetuning_changes_the_encoder_and_saves_a_folder_that_reproduces_its_scores(tiny_annotator, tmp_path,
                                                                                          monkeypatch):
    import megasnow.quality.train as train_mod

    encoder_dir = os.path.join(tiny_annotator, "encoder")  # a 2-layer BERT: the full path, at low CPU cost
    pos = [Example(t, 1) for t in stdlib_functions(6, seed=11)]
    neg = [Example(t, 0) for t in machine_negatives(6, seed=12)]
    train, heldout = balanced_split(pos, neg, heldout_fraction=1 / 3, seed=0)  # 8 train, 4 held-out
    assert len(train) == 8 and len(heldout) == 4

    saved = []  # held-out probabilities of the in-memory annotator at every save
    real_save = train_mod.save_annotator

    def recording_save(annotator, folder, **kwargs):
        ids = annotator.encode_texts([e.text for e in heldout])
        saved.append((kwargs.get("metrics"), predict_token_lists(annotator, ids)))
        return real_save(annotator, folder, **kwargs)

    monkeypatch.setattr(train_mod, "save_annotator", recording_save)
    folder = str(tmp_path / "full")
    cfg = TrainConfig(mode="full", encoder=encoder_dir, max_length=32, epochs=1, batch_size=4, lr=1e-4, seed=0)
    metrics = train_annotator(train, heldout, folder, cfg, progress=False)  # 2 steps

    assert metrics["config"]["mode"] == "full" and metrics["epochs_run"] == metrics["best_epoch"] == 1
    h = metrics["heldout"]
    assert h["n"] == 4 and h["positives"] == 2 and 0.0 <= h["roc_auc"] <= 1.0
    # The improvement saved a partial folder at once; the last save is the final best annotator.
    assert len(saved) == 2 and saved[0][0]["partial"] and "partial" not in saved[1][0]
    assert json.load(open(os.path.join(folder, "metrics.json")))["heldout"] == pytest.approx(h)

    annotator = load_annotator(folder)
    base, _ = load_encoder(encoder_dir)
    tuned, original = annotator.encoder.state_dict(), base.state_dict()
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight",
                 "encoder.layer.1.output.dense.weight"):
        assert (tuned[name] - original[name]).abs().max() > 1e-6, name  # fine-tuned, not frozen
    assert set(tuned) == set(original)
    # The reloaded folder gives the in-memory annotator's held-out scores, hence the saved metrics.
    probs = predict_token_lists(annotator, annotator.encode_texts([e.text for e in heldout]))
    np.testing.assert_allclose(probs, saved[-1][1], atol=1e-6)
    from megasnow.quality.metrics import classification_metrics

    assert classification_metrics([e.label for e in heldout], probs) == pytest.approx(h)
    seen = set(np.load(os.path.join(folder, "seen_texts.npy")).tolist())
    assert seen == {text_key(e.text) for e in train + heldout}


def test_train_command_end_to_end(tmp_path, capsys):
    from tools.annotate import main

    functions = stdlib_functions(28, seed=21)
    code = write_jsonl(str(tmp_path / "hq.jsonl"), [{"content": t} for t in functions[:20]])
    # Instruction data: the docstring's first line as the problem, the function in a fenced block.
    inst = [{"problem": t.split('"""')[1].strip().splitlines()[0], "solution": f"Sure:\n```python\n{t}\n```"}
            for t in functions[20:] if t.count('"""') >= 2]
    instructions = write_jsonl(str(tmp_path / "inst.jsonl"), inst)
    docs = write_jsonl(str(tmp_path / "docs" / "part0.jsonl"),
                       [{"text": t, "lang": "misc"} for t in machine_negatives(60, seed=22)])
    out, splits = str(tmp_path / "annotator"), str(tmp_path / "splits")
    rc = main(["train", "--positives", code, "--text-field", "content", "--instructions", instructions,
               "--negatives", docs, "--output", out, "--max-length", "32", "--epochs", "40",
               "--heldout-fraction", "0.25", "--save-splits", splits])
    assert rc == 0
    printed = capsys.readouterr().out
    n_pos = 20 + len(inst)
    stats = json.loads(printed.split("training data: ", 1)[1].splitlines()[0])
    assert stats["positives_available"] == n_pos and stats["in_both_classes_dropped"] == 0

    train, heldout = read_examples(os.path.join(splits, "train.jsonl")), read_examples(os.path.join(splits, "heldout.jsonl"))
    k = round(n_pos * 0.25)
    assert [e.label for e in heldout].count(1) == [e.label for e in heldout].count(0) == k
    assert [e.label for e in train].count(1) == [e.label for e in train].count(0) == n_pos - k
    formatted = [e.text for e in train + heldout if e.label == 1 and e.text.startswith("# ")]
    assert len(formatted) == len(inst) and all("```" not in t for t in formatted)

    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["train_examples"] == len(train) and metrics["heldout_examples"] == len(heldout)
    assert metrics["heldout"]["roc_auc"] >= 0.8  # real code vs headers/configs: easy even at 32 tokens
    assert f"held-out ROC-AUC {metrics['heldout']['roc_auc']:.4f}" in printed
    annotator = load_annotator(out)
    probs = predict_token_lists(annotator, annotator.encode_texts([e.text for e in heldout]))
    from megasnow.quality.metrics import roc_auc

    assert roc_auc([e.label for e in heldout], probs) == pytest.approx(metrics["heldout"]["roc_auc"], abs=1e-6)


def test_train_command_bad_inputs_fail_clearly(tmp_path, capsys):
    from megasnow.utils.cli import run_tool
    from tools.annotate import main

    docs = write_jsonl(str(tmp_path / "docs.jsonl"), [{"text": f"int x{i};\n"} for i in range(4)])
    assert run_tool(main, ["train", "--negatives", docs, "--output", str(tmp_path / "a")]) == 2
    assert capsys.readouterr().err == "error: train: give --positives and/or --instructions\n"
    pos = write_jsonl(str(tmp_path / "pos.jsonl"), [{"text": f"def f():\n    return {i}\n"} for i in range(4)])
    assert run_tool(main, ["train", "--positives", pos, "--negatives", docs, "--output", str(tmp_path / "b"),
                           "--heldout-fraction", "0.25", "--encoder", str(tmp_path / "no_encoder"),
                           "--save-splits", str(tmp_path / "splits")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: --encoder: encoder folder {str(tmp_path / 'no_encoder')!r} does not exist (loading is "
                   f"offline: pass a local folder)"]  # before the training set is built (no progress lines)
    assert not os.path.exists(tmp_path / "b") and not os.path.exists(tmp_path / "splits")
    # --max-length is checked before any work too (the negatives path does not even exist)
    missing = str(tmp_path / "no_docs")
    assert run_tool(main, ["train", "--positives", pos, "--negatives", missing, "--output", str(tmp_path / "b"),
                           "--max-length", "4096"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --max-length 4096 exceeds the encoder's 512 positions") and "no_docs" not in err
    # empty positives: the files are named, and why negatives cannot make up for them
    empty = write_jsonl(str(tmp_path / "empty.jsonl"), [{"text": ""}, {"text": 5}])
    assert run_tool(main, ["train", "--positives", empty, "--negatives", docs, "--output", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no usable positives in {empty} (skipped: 1 positive empty; 1 positive non-string): "
                          "negatives are sampled to match the positives"), err
    # an existing annotator folder is not replaced silently
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "annotator.json").write_text("{}")
    assert run_tool(main, ["train", "--positives", pos, "--negatives", docs, "--output", str(taken)]) == 2
    assert capsys.readouterr().err == (f"error: --output {taken}: already holds an annotator; nothing was changed. "
                                       "Give a new folder, or --overwrite to train again and replace it\n")
    assert os.listdir(taken) == ["annotator.json"]
    (taken / "annotator.json").unlink()  # any non-empty folder, not only one holding an annotator (docs/quality.md)
    (taken / "notes.txt").write_text("mine")
    assert run_tool(main, ["train", "--positives", pos, "--negatives", docs, "--output", str(taken)]) == 2
    assert capsys.readouterr().err.startswith(f"error: --output {taken}: already holds files; nothing was changed.")
    assert os.listdir(taken) == ["notes.txt"]


def test_interrupted_train_says_nothing_was_kept():
    from tools.annotate import interrupt_advice

    assert interrupt_advice(["train", "--output", "a"]).startswith("nothing was kept")
    assert "resume" in interrupt_advice(["score", "--input", "x"])
