"""Shared helpers for trainer tests: byte-level indexed datasets from real source files, tiny run configs."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import yaml

from megasnow.data.indexed import IndexedDatasetBuilder, data_file_path, index_file_path

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STDLIB = os.path.dirname(os.__file__)


def real_code_files(pattern="*.py", limit=40, skip=0):
    """Python standard-library files: real code that is on every machine."""
    files = sorted(glob.glob(os.path.join(STDLIB, pattern)))
    return files[skip:skip + limit]


def write_byte_dataset(prefix, files, max_bytes_per_file=4000, eod_id=None):
    """One document per file, tokens = UTF-8 bytes (ids < 256), so no tokenizer is needed; `eod_id` (e.g. 0, a
    byte source code never holds) is appended to each document like preprocess_data.py --append-eod does."""
    builder = IndexedDatasetBuilder(data_file_path(prefix), dtype=np.uint16)
    for path in files:
        data = open(path, "rb").read()[:max_bytes_per_file]
        tokens = np.frombuffer(data, dtype=np.uint8).astype(np.uint16)
        if eod_id is not None:
            tokens = np.append(tokens, np.uint16(eod_id))
        builder.add_item(tokens)
        builder.end_document()
    builder.finalize(index_file_path(prefix))
    return prefix


def tiny_config(tmp_path, phases, **sections):
    """A run config dict for a 2-layer, 64-wide byte-level model, overridable per section."""
    cfg = {
        "model": {"preset": "tiny", "vocab_size": 256, "max_seq_len": 64},
        "data": {"seq_len": 32, "seed": 7},
        "train": {"micro_batch_size": 2, "global_batch_size": 4, "device": "cpu", "seed": 3, "threads": 1},
        "optim": {"weight_decay": 0.0, "clip_grad": 1.0},
        "schedule": {"style": "constant", "max_lr": 3e-3, "min_lr": 3e-3, "warmup_steps": 0},
        "checkpoint": {"dir": str(tmp_path / "ckpt"), "interval": 0, "keep_last": 3},
        "log": {"dir": str(tmp_path / "log"), "tensorboard": False},
        "phases": phases,
    }
    for k, v in sections.items():
        cfg.setdefault(k, {}).update(v)
    return cfg


def write_config(path, cfg):
    """Write cfg as YAML, atomically: ranks of a spawned test write the same config while another may be reading it."""
    from megasnow.utils.atomic import atomic_write_text

    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    atomic_write_text(str(path), yaml.safe_dump(cfg))
    return str(path)


def train_command(config_path, *overrides):
    return [sys.executable, "-m", "megasnow.train", str(config_path), *overrides]


def train_env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_train(config_path, *overrides, timeout=180):
    return subprocess.run(train_command(config_path, *overrides), capture_output=True, text=True, timeout=timeout,
                          env=train_env(), cwd=REPO)


def losses(log_dir, kind="train"):
    out = []
    with open(os.path.join(log_dir, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("kind", "train") == kind:
                out.append(rec)
    return out


def train_in_process(config_path, *overrides):
    """Run the trainer inside this process (saves a Python start-up); returns the final TrainerState."""
    from megasnow.parallel import state
    from megasnow.train.config import load_train_config
    from megasnow.train.trainer import Trainer

    cfg = load_train_config(config_path, overrides)
    try:
        trainer = Trainer(cfg).setup()
        return trainer.run()
    finally:
        state.destroy_model_parallel()


def cli(capsys, *argv):
    """Run `python -m megasnow.train ARGV` in this process under the command-line rule: (exit code, stdout, stderr)."""
    from megasnow.train.__main__ import main
    from megasnow.utils.cli import run_tool

    code = run_tool(main, list(argv), prog="megasnow.train")
    out = capsys.readouterr()
    return code, out.out, out.err
