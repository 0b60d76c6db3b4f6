"""A tiny but real ablation setting for the recipe tests: documents from this machine's Python standard library and
C headers, a small SentencePiece tokenizer, a 2-layer random-BERT annotator (fast scoring) and a 2-layer decoder."""
import glob
import os
import sys

from tests.quality.machine_corpus import write_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(REPO, "tests", "eval", "fixtures")
DOC_CHARS = 240  # documents small next to the budget, so selections of 1x and 2x the budget differ
BENCHMARKS = [os.path.join(FIXTURES, "humaneval_plus_mini.jsonl"), os.path.join(FIXTURES, "mbpp_plus_mini.jsonl")]


def _real_files():
    stdlib = os.path.dirname(os.__file__)
    py = sorted(glob.glob(os.path.join(stdlib, "*.py")))[:70]
    c = sorted(f for f in glob.glob("/usr/include/*.h") if os.path.getsize(f) > 800)[:40]
    out = []
    for lang, files in (("python", py), ("c", c)):
        for path in files:
            try:
                text = open(path, encoding="utf-8").read()
            except (UnicodeDecodeError, OSError):
                continue
            if len(text.strip()) >= 300:
                out.append({"text": text[:DOC_CHARS], "lang": lang, "id": os.path.basename(path)})
    return out


def tiny_annotator(folder):
    """A 2-layer, 32-wide random BERT with the MiniLM tokenizer saved as an annotator folder (its scores differ per
    document, which is all selection needs)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from megasnow.quality.annotator import AnnotatorConfig, QualityAnnotator, default_encoder_path, save_annotator

    tokenizer = AutoTokenizer.from_pretrained(default_encoder_path(), local_files_only=True)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512)
    annotator = QualityAnnotator(BertModel(cfg), tokenizer, AnnotatorConfig(max_length=64))
    torch.nn.init.normal_(annotator.head.weight, std=1.0)
    save_annotator(annotator, folder)
    return folder


def build_inputs(root):
    """Documents, tokenizer and annotator under `root`; returns their paths."""
    docs = _real_files()
    phase1 = write_jsonl(os.path.join(root, "phase1.jsonl"), [d for i, d in enumerate(docs) if i % 8])
    valid = write_jsonl(os.path.join(root, "valid.jsonl"), [d for i, d in enumerate(docs) if i % 8 == 0])
    sys.path.insert(0, os.path.join(REPO, "tools"))
    try:
        from train_tokenizer import train_tokenizer
    finally:
        sys.path.pop(0)
    tokenizer, _ = train_tokenizer([phase1], os.path.join(root, "tok"), 400, input_sentence_size=20_000,
                                   num_threads=1)
    annotator = tiny_annotator(os.path.join(root, "annotator"))
    return {"phase1": phase1, "valid": valid, "tokenizer": tokenizer, "annotator": annotator}


def tiny_config(inputs, **overrides):
    """An ablation config dict: 2 arms' worth of data in a few steps of a 2-layer, 32-wide decoder."""
    cfg = {
        "data": {"tokenizer": inputs["tokenizer"], "phase1": [inputs["phase1"]], "valid": [inputs["valid"]]},
        "annotators": [{"name": "tiny", "folder": inputs["annotator"]}],
        "trainer": {"model": {"preset": "tiny", "hidden_size": 32, "ffn_hidden_size": 64, "num_layers": 2,
                              "num_heads": 2, "num_kv_heads": 2, "max_seq_len": 32},
                    "data": {"seq_len": 32}, "train": {"micro_batch_size": 4, "global_batch_size": 4, "device": "cpu"},
                    "optim": {"weight_decay": 0.0}},
        "base": {"steps": 4, "schedule": {"style": "cosine", "max_lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 1}},
        "ablation": {"budget_tokens": 400, "repeats": 2, "arms": ["selected", "random", "selected_once"],
                     "seeds": [0, 1], "schedule": {"style": "linear", "max_lr": 3e-3, "min_lr": 0.0, "warmup_steps": 1},
                     "mix_tolerance_pp": 100.0},
        "measure": {"benchmarks": list(BENCHMARKS), "alignment_random_files": 20, "curve_points": 2},
        "runner": {"launcher": "inprocess", "threads": 1, "device": "cpu", "checkpoint_interval": 0},
    }
    for key, value in overrides.items():
        section, _, sub = key.partition(".")
        if sub:
            cfg[section][sub] = value
        else:
            cfg[section] = value
    return cfg


def write_config(path, cfg):
    import yaml

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f)
    return path
