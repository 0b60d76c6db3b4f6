#!/usr/bin/env python
"""Does FIM training teach infilling? Two tiny models trained alike on real Python code, one with data.fim.rate 0.5
(the rest of the config identical), then asked to fill held-out masked short lines (exact match, greedy).

Corpus: the Python standard library on this machine (*.py outside tests and site-packages), files grouped by folder
into StarCoder2-style repository documents; every file whose path hashes to 0 mod 10 is held out. A SentencePiece
tokenizer (tools/train_tokenizer.py) is trained on the training files. Tasks: short lines (4-40 characters, not
comments) of the held-out files, every 5th such line, with up to --context characters of whole lines before (prefix)
and after (suffix). Scored: the model's greedy text up to its first newline equals the masked line (exact match),
and the mean loss (nats/token) of the line's tokens given the prompt (teacher-forced: a steadier signal).
  - control, left-to-right: the model trained without FIM continues the prefix (the suffix cannot be used);
  - FIM model, PSM and SPM prompts (megasnow.generation LocalEngine, as the server builds them);
  - FIM model, left-to-right (what FIM costs ordinary completion).

Usage: python benchmarks/fim_tiny_model.py [--steps 600] [--threads 1] [--out-dir .bench_data/fim_tiny]
"""
import argparse
import glob
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)


def stdlib_files():
    lib = os.path.dirname(os.__file__)
    out = []
    for path in sorted(glob.glob(os.path.join(lib, "**", "*.py"), recursive=True)):
        rel = os.path.relpath(path, lib)
        parts = rel.split(os.sep)
        if parts[0] in ("site-packages", "test", "idlelib", "lib2to3") or "tests" in parts or "test" in parts:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError):
            continue
        if 200 <= len(text) <= 200_000:
            out.append((rel, text))
    return out


def held_out(rel):
    return int(hashlib.sha256(rel.encode()).hexdigest(), 16) % 10 == 0


def line_tasks(files, context, every=5, limit=2000, min_chars=4, max_chars=40):
    """(prefix, line, suffix) of short code lines of held-out files: whole lines of context on both sides."""
    tasks, k = [], 0
    for rel, text in files:
        lines = text.splitlines(keepends=True)
        for i, line in enumerate(lines):
            body = line.rstrip("\n")
            stripped = body.strip()
            if not min_chars <= len(stripped) <= max_chars or stripped.startswith("#") or not line.endswith("\n"):
                continue
            k += 1
            if k % every:
                continue
            before, after = [], []
            for j in range(i - 1, -1, -1):
                if sum(map(len, before)) + len(lines[j]) > context:
                    break
                before.insert(0, lines[j])
            for j in range(i + 1, len(lines)):
                if sum(map(len, after)) + len(lines[j]) > context:
                    break
                after.append(lines[j])
            if not before or not after:
                continue
            tasks.append({"file": rel, "line": i + 1, "prefix": "".join(before), "middle": body,
                          "suffix": "\n" + "".join(after)})
            if len(tasks) >= limit:
                return tasks
    return tasks


def prepare(out_dir, vocab_size):
    """Tokenizer and binarized training documents (cached in out_dir); returns (tokenizer, prefix, held-out files)."""
    from megasnow.curate.documents import repo_documents
    from megasnow.data.indexed import write_dataset
    from megasnow.data.tokenizer import load_tokenizer

    os.makedirs(out_dir, exist_ok=True)
    files = stdlib_files()
    train = [(r, t) for r, t in files if not held_out(r)]
    test = [(r, t) for r, t in files if held_out(r)]
    model = os.path.join(out_dir, f"sp{vocab_size}.model")
    prefix = os.path.join(out_dir, "train_docs")
    if not os.path.exists(model):
        jsonl = os.path.join(out_dir, "train.jsonl")
        with open(jsonl, "w", encoding="utf-8") as f:
            for rel, text in train:
                f.write(json.dumps({"text": text}) + "\n")
        subprocess.run([sys.executable, "tools/train_tokenizer.py", "--input", jsonl, "--output-prefix",
                        model[:-len(".model")], "--vocab-size", str(vocab_size), "--input-sentence-size", "200000"],
                       check=True, cwd=ROOT)
    tok = load_tokenizer(model)
    if not os.path.exists(prefix + ".idx"):
        by_repo = {}
        for k, (rel, text) in enumerate(train):
            by_repo.setdefault(os.path.dirname(rel) or "stdlib", []).append(
                {"path": rel, "content": text, "id": str(k)})
        docs = [d["text"] for repo, fs in sorted(by_repo.items())
                for d in repo_documents(fs, "python", f"cpython/{repo}", seed=0, max_chars=200_000)]
        write_dataset(prefix, [tok.encode(t) + [tok.eod_id] for t in docs], dtype=np.int32)
    return model, prefix, train, test


def train(out_dir, name, tokenizer, prefix, args, fim_rate):
    """Train one model in this process; returns its checkpoint folder (skipped when already trained)."""
    from megasnow.parallel import state
    from megasnow.train.config import load_train_config
    from megasnow.train.trainer import Trainer

    run = os.path.join(out_dir, name)
    ckpt = os.path.join(run, "ckpt")
    if os.path.exists(os.path.join(ckpt, "latest")):
        return ckpt
    cfg = {
        "model": {"preset": "tiny", "hidden_size": args.hidden, "ffn_hidden_size": args.hidden * 8 // 3 // 16 * 16,
                  "num_layers": args.layers, "num_heads": args.hidden // 32, "num_kv_heads": args.hidden // 32,
                  "max_seq_len": args.seq_len, "document_mask": True},
        "data": {"tokenizer": tokenizer, "seq_len": args.seq_len, "seed": 1,
                 "fim": {"rate": fim_rate, "spm_rate": 0.5, "level": "file"}},
        "train": {"micro_batch_size": args.batch, "global_batch_size": args.batch, "device": "cpu", "seed": 1,
                  "threads": args.threads},
        "optim": {"weight_decay": 0.1, "clip_grad": 1.0},
        "schedule": {"style": "cosine", "max_lr": args.lr, "min_lr": args.lr / 10, "warmup_steps": 50},
        "checkpoint": {"dir": ckpt, "interval": 0},
        "log": {"dir": os.path.join(run, "log"), "tensorboard": False, "interval": 50},
        "phases": [{"name": "main", "blend": [{"path": prefix}], "steps": args.steps}],
    }
    os.makedirs(run, exist_ok=True)
    path = os.path.join(run, "config.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    try:
        Trainer(load_train_config(path)).setup().run()
    finally:
        state.destroy_model_parallel()
    return ckpt


def score(ckpt, tasks, mode, threads):
    """Exact-match count of the masked lines: mode 'l2r' (prefix only), 'psm' or 'spm' (prefix and suffix)."""
    import torch

    from megasnow.generation.local import LocalBackend, LocalEngine
    from megasnow.generation.protocol import GenerationRequest, SamplingParams

    torch.set_num_threads(threads)
    engine = LocalEngine.from_path(ckpt, fim_format="spm" if mode == "spm" else "psm", max_num_seqs=32)
    params = SamplingParams(max_tokens=24, temperature=0.0, stop=("\n",))
    requests = [GenerationRequest(id=str(i), prompt=t["prefix"], params=params,
                                  suffix=None if mode == "l2r" else t["suffix"]) for i, t in enumerate(tasks)]
    hits = {}
    for r in LocalBackend(engine).generate(requests):
        if not r.ok:
            raise RuntimeError(r.error)
        hits[int(r.request_id)] = r.choices[0].text == tasks[int(r.request_id)]["middle"]
    total, count = 0.0, 0
    with torch.no_grad():
        for req, t in zip(requests, tasks):
            prompt = list(engine.prepare(req).prompt_ids)
            middle = engine.tokenizer.encode(t["middle"])
            logits = engine.model(torch.tensor([prompt + middle]))[0, len(prompt) - 1:-1].float()
            total += float(torch.nn.functional.cross_entropy(logits, torch.tensor(middle), reduction="sum"))
            count += len(middle)
    return [hits[i] for i in range(len(tasks))], total / count


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default=os.path.join(ROOT, ".bench_data", "fim_tiny"))
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--seq-len", type=int, default=384)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--context", type=int, default=300, help="characters of whole lines on each side of a task")
    p.add_argument("--tasks", type=int, default=400, help="line tasks scored")
    p.add_argument("--line-chars", type=int, nargs=2, default=[4, 40], metavar=("MIN", "MAX"),
                   help="masked lines have this many characters (indentation aside)")
    p.add_argument("--every", type=int, default=5, help="take every N-th eligible line")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(HERE, "results", "fim_tiny_model.json"))
    args = p.parse_args()

    t0 = time.time()
    tokenizer, prefix, train_files, test_files = prepare(args.out_dir, args.vocab_size)
    from megasnow.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer)
    candidates = line_tasks(test_files, args.context, every=args.every, min_chars=args.line_chars[0],
                            max_chars=args.line_chars[1])
    # every prompt (3 sentinels, prefix, suffix) and 24 new tokens fit in the trained length
    tasks = [t for t in candidates if 3 + len(tok.encode(t["prefix"])) + len(tok.encode(t["suffix"])) + 24
             <= args.seq_len][:args.tasks]
    print(f"{len(train_files)} training files, {len(test_files)} held-out files, {len(tasks)} line tasks "
          f"({len(candidates) - len(tasks)} left out: too long for seq_len, or over --tasks) "
          f"({time.time() - t0:.0f} s)", flush=True)
    ckpts = {}
    for name, rate in (("control", 0.0), ("fim", 0.5)):
        t1 = time.time()
        ckpts[name] = train(args.out_dir, name, tokenizer, prefix, args, rate)
        print(f"{name}: trained in {time.time() - t1:.0f} s -> {ckpts[name]}", flush=True)
    results, losses = {}, {}
    for name, mode in (("control", "l2r"), ("fim", "l2r"), ("fim", "psm"), ("fim", "spm")):
        hits, loss = score(ckpts[name], tasks, mode, args.threads)
        results[f"{name} {mode}"], losses[f"{name} {mode}"] = hits, loss
        print(f"{name:8s} {mode}: exact match {sum(hits)}/{len(hits)} = {np.mean(hits):.3f}, masked-line loss "
              f"{loss:.3f} nats/token", flush=True)
    paired = {}
    control = np.array(results["control l2r"])
    for mode in ("psm", "spm"):
        fim = np.array(results[f"fim {mode}"])
        only_fim, only_control = int((fim & ~control).sum()), int((control & ~fim).sum())
        # McNemar's test (continuity-corrected chi-square, 1 dof) on the discordant pairs
        chi2 = (abs(only_fim - only_control) - 1) ** 2 / max(1, only_fim + only_control)
        paired[mode] = {"fim_only": only_fim, "control_only": only_control, "mcnemar_chi2": chi2,
                        "p_below_0.05": chi2 > 3.84}
        print(f"paired: FIM {mode.upper()} right where control wrong {only_fim}, the reverse {only_control} "
              f"(McNemar chi2 {chi2:.2f}: {'p < 0.05' if chi2 > 3.84 else 'n.s.'})")
    from megasnow.utils.atomic import atomic_write_text

    atomic_write_text(args.out, json.dumps({
        "args": vars(args), "tasks": len(tasks),
        "exact_match": {k: float(np.mean(v)) for k, v in results.items()},
        "hits": {k: int(sum(v)) for k, v in results.items()}, "paired_vs_control": paired,
        "middle_loss": losses,
        "seconds": time.time() - t0}, indent=1))


if __name__ == "__main__":
    main()
