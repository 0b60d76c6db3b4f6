"""Files/s of annotator scoring: megasnow's length-sorted cross-file batching vs plain HF AutoModel loops.

All three score the SAME files with the SAME three-window rule, the same weights (the bundled
all-MiniLM-L6-v2 encoder + a linear head) and the same precision (bf16 autocast on CUDA, fp32 on
CPU), measured side by side in one process, repeated with the order rotated; the median and the
spread (min-max over repeats) are reported. Scores are checked to agree between the three.
Results: benchmarks/results/annotate_throughput.md.

  python benchmarks/annotate_throughput.py --files 96 --repeats 5 --threads 2 [--device cuda]

`--encoder DIR --random-weights` builds the encoder from DIR's config.json with random weights (DIR needs only
the config and the tokenizer): what the GPU suite does, since the bundled encoder's weights (87 MB) cannot travel
to the GPU machine. Same architecture, same tokens, same FLOPs: the speed is the same, the scores are not.
"""
import contextlib
import glob
import os
import random
import statistics
import sys
import sysconfig
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from megasnow.quality.annotator import (AnnotatorConfig, QualityAnnotator, build_annotator,  # noqa: E402
                                        default_batch_tokens, load_annotator)
from megasnow.quality.score import BatchedScorer  # noqa: E402
from megasnow.utils.cli import ArgumentParser, fail, run_tool  # noqa: E402

SOURCES = [  # real code files on every machine: Python stdlib, C headers, JavaScript
    os.path.join(sysconfig.get_paths()["stdlib"], "*.py"),
    os.path.join(sysconfig.get_paths()["stdlib"], "*", "*.py"),
    "/usr/include/*.h",
    "/usr/include/*/*.h",
    "/usr/lib/node_modules/**/*.js",
    "/usr/share/nodejs/**/*.js",
]


def sample_files(n, seed, max_chars):
    rng = random.Random(seed)
    paths = sorted({p for g in SOURCES for p in glob.glob(g, recursive=True) if os.path.isfile(p)})
    rng.shuffle(paths)
    texts = []
    for p in paths:
        try:
            t = open(p, encoding="utf-8").read()
        except (UnicodeDecodeError, OSError):
            continue
        if t.strip():
            texts.append(t[:max_chars])
        if len(texts) == n:
            break
    return texts


def sample_functions(n, seed):
    """Function-sized files (the instruction-data / HumanEval shape): stdlib functions and classes via ast."""
    import ast

    rng = random.Random(seed)
    paths = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))
    rng.shuffle(paths)
    out = []
    for p in paths:
        try:
            src = open(p, encoding="utf-8").read()
            tree = ast.parse(src)
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                seg = ast.get_source_segment(src, node)
                if seg and seg.strip():
                    out.append(seg)
    rng.shuffle(out)
    return out[:n]


def plain_windows(ids, window):
    """The three-window rule, written out again for the baseline (top, centred middle, bottom)."""
    if len(ids) <= window:
        return [ids]
    mid = (len(ids) - window) // 2
    return [ids[:window], ids[mid : mid + window], ids[-window:]]


def autocast(device):
    """The precision megasnow's scorer uses on `device`, applied to the baselines too (a fair fight)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def head_probs(annotator, batch):
    with autocast(batch["input_ids"].device):
        out = annotator.encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
    pooled = (out * mask).sum(1) / mask.sum(1)
    return torch.sigmoid(annotator.head(pooled.float()).squeeze(-1))


@torch.inference_mode()
def hf_per_file(annotator, texts):
    """Plain loop: one forward per file over its (up to three) windows, padded with tokenizer.pad."""
    tok, window, dev = annotator.tokenizer, annotator.window_tokens, annotator.device
    scores = []
    for text in texts:
        ids = tok(text, add_special_tokens=False, verbose=False)["input_ids"]
        feats = [{"input_ids": [tok.cls_token_id] + w + [tok.sep_token_id]} for w in plain_windows(ids, window)]
        batch = {k: v.to(dev) for k, v in tok.pad(feats, return_tensors="pt").items()}
        scores.append(head_probs(annotator, batch).mean().item())
    return scores


@torch.inference_mode()
def hf_naive_batches(annotator, texts, files_per_batch=16):
    """Naive batching: consecutive files' windows in one batch, padded to the batch's longest (no sorting)."""
    tok, window, dev = annotator.tokenizer, annotator.window_tokens, annotator.device
    scores = []
    for start in range(0, len(texts), files_per_batch):
        group = texts[start : start + files_per_batch]
        feats, owners = [], []
        for i, text in enumerate(group):
            ids = tok(text, add_special_tokens=False, verbose=False)["input_ids"]
            for w in plain_windows(ids, window):
                feats.append({"input_ids": [tok.cls_token_id] + w + [tok.sep_token_id]})
                owners.append(i)
        batch = {k: v.to(dev) for k, v in tok.pad(feats, return_tensors="pt").items()}
        probs = head_probs(annotator, batch).cpu().numpy()
        owners = np.asarray(owners)
        scores += [float(probs[owners == i].mean()) for i in range(len(group))]
    return scores


def megasnow_scores(scorer, texts):
    return scorer.score_texts(texts)[0]


def random_weight_annotator(folder, max_length, seed):
    """An annotator whose encoder has FOLDER's architecture and tokenizer but weights drawn from its config."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    if not os.path.exists(os.path.join(folder, "config.json")):
        fail(f"--encoder {folder}: no config.json there (a HuggingFace model folder is needed)")
    torch.manual_seed(seed)
    encoder = AutoModel.from_config(AutoConfig.from_pretrained(folder, local_files_only=True))
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    cfg = AnnotatorConfig(max_length=max_length, base_encoder=os.path.abspath(folder) + " (random weights)")
    return QualityAnnotator(encoder, tokenizer, cfg)


def main(argv=None):
    ap = ArgumentParser(description=__doc__, prog="annotate_throughput.py")
    ap.add_argument("--files", type=int, default=96)
    ap.add_argument("--mix", choices=["files", "functions"], default="files",
                    help="whole code files from this machine, or function-sized snippets")
    ap.add_argument("--slice", type=int, default=32, help="files per timed slice (methods alternate per slice)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--max-chars", type=int, default=200_000, help="cap per file (keeps tokenization bounded)")
    ap.add_argument("--batch-tokens", type=int, nargs="*", default=None,
                    help="megasnow's padded tokens per batch; several values = one megasnow method each "
                         "(default: the CLI's, 16384 on CUDA, 2048 on CPU)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--annotator", default=None, help="trained annotator folder (default: bundled encoder + fresh head)")
    ap.add_argument("--encoder", default=None, help="HuggingFace encoder folder for a fresh annotator "
                                                    "(default: the bundled all-MiniLM-L6-v2)")
    ap.add_argument("--random-weights", action="store_true",
                    help="draw the encoder's weights from its config instead of loading them (--encoder needs only "
                         "config.json and the tokenizer)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--csv", default=None)
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {args.device}: no CUDA device is visible; use --device cpu")
    if args.random_weights and not args.encoder:
        fail("--random-weights needs --encoder DIR (the folder whose config.json and tokenizer to use)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.annotator:
        annotator = load_annotator(args.annotator, args.device)
    elif args.random_weights:
        annotator = random_weight_annotator(args.encoder, args.max_length, args.seed).to(args.device).eval()
    else:
        annotator = build_annotator(args.encoder, max_length=args.max_length).to(args.device).eval()
    texts = (sample_files(args.files, args.seed, args.max_chars) if args.mix == "files"
             else sample_functions(args.files, args.seed))
    lengths = [len(ids) for ids in annotator.encode_texts(texts, truncate=False)]
    windows = sum(1 if n <= annotator.window_tokens else 3 for n in lengths)
    short = sum(n <= annotator.window_tokens for n in lengths)
    print(f"{len(texts)} files, {windows} windows; encoder tokens per file: median {int(np.median(lengths))}, "
          f"{short} files fit one window; device {args.device}, {args.threads} threads")

    sizes = args.batch_tokens or [default_batch_tokens(args.device)]
    methods = {
        "hf_per_file": lambda chunk: hf_per_file(annotator, chunk),
        "hf_naive_batch16": lambda chunk: hf_naive_batches(annotator, chunk),
    }
    for size in sizes:
        scorer = BatchedScorer(annotator, batch_tokens=size)
        name = "megasnow" if len(sizes) == 1 else f"megasnow_bt{size}"
        methods[name] = (lambda sc: lambda chunk: megasnow_scores(sc, chunk))(scorer)
    names = list(methods)
    for name in names:  # warm-up (allocator, kernels, tokenizer caches) for every method alike
        methods[name](texts[:4])
    # Methods alternate slice by slice (order rotated), so load from other users of a shared CPU
    # hits all of them alike; wall time and process CPU time are both summed per method.
    wall = {k: [0.0] * args.repeats for k in names}
    cpu = {k: [0.0] * args.repeats for k in names}
    results = {k: [] for k in names}
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    for r in range(args.repeats):
        for s_i, start in enumerate(range(0, len(texts), args.slice)):
            chunk = texts[start : start + args.slice]
            k = (r + s_i) % len(names)
            for name in names[k:] + names[:k]:
                sync()
                w0, c0 = time.perf_counter(), time.process_time()
                out = methods[name](chunk)
                sync()
                wall[name][r] += time.perf_counter() - w0
                cpu[name][r] += time.process_time() - c0
                if r == 0:
                    results[name] += list(out)
    ref = np.asarray(results["hf_per_file"])
    rows = []
    base_wall = len(texts) / statistics.median(wall["hf_per_file"])
    base_cpu = len(texts) / statistics.median(cpu["hf_per_file"])
    for name in names:
        fps = len(texts) / statistics.median(wall[name])
        lo, hi = len(texts) / max(wall[name]), len(texts) / min(wall[name])
        # Per-repeat ratio to the baseline: both ran interleaved in the same repeat, under the same load.
        ratios = [b / m for b, m in zip(wall["hf_per_file"], wall[name])]
        fps_cpu = len(texts) / statistics.median(cpu[name])
        diff = float(np.abs(np.asarray(results[name]) - ref).max())
        rows.append((name, fps, lo, hi, fps / base_wall, min(ratios), max(ratios), fps_cpu, fps_cpu / base_cpu, diff))
        print(f"{name:<18} wall {fps:7.2f} files/s [{lo:.2f}-{hi:.2f}] ({fps / base_wall:5.2f}x, per repeat "
              f"{min(ratios):.2f}-{max(ratios):.2f}x)   per CPU-second {fps_cpu:7.2f} files ({fps_cpu / base_cpu:5.2f}x)"
              f"   max |score diff| {diff:.1e}   wall runs {', '.join(f'{t:.1f}s' for t in wall[name])}")
    if args.csv:
        with open(args.csv, "w") as f:
            f.write("mix,method,files_per_s_wall,files_per_s_min,files_per_s_max,speedup_wall,speedup_min,speedup_max,"
                    "files_per_cpu_s,speedup_cpu,max_abs_score_diff\n")
            for name, fps, lo, hi, sp, spl, sph, fpc, spc, diff in rows:
                f.write(f"{args.mix},{name},{fps:.3f},{lo:.3f},{hi:.3f},{sp:.3f},{spl:.3f},{sph:.3f},{fpc:.3f},"
                        f"{spc:.3f},{diff:.3e}\n")


if __name__ == "__main__":
    sys.exit(run_tool(main))
