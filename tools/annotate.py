#!/usr/bin/env python
"""Phase-2 quality annotation front-end: train an annotator, score corpora, select the high-quality
set, and report the annotator's alignment with benchmark solutions. See docs/quality.md."""
import argparse
import contextlib
import json
import logging
import os
import sys

from megasnow.utils.cli import INTERRUPTED_RESUMABLE, ArgumentParser, fail, removed_on_failure, run_tool, warn

EXAMPLES = """examples:
  annotate.py train --positives hq_code/*.jsonl --instructions oss_instruct.jsonl \\
      --negatives curated/documents --output annotator/
  annotate.py score --input curated/documents --annotator annotator/ --output scores/ --workers 2
  annotate.py select --documents curated/documents --scores scores/ --tokenizer tok.model \\
      --budget-tokens 12.5B --output phase2/
  annotate.py eval --annotator annotator/ --corpus curated/documents
"""


def parse_token_count(text):
    """'12.5B', '300M', '40k' or a plain integer -> a positive int (megasnow.quality.selection.parse_token_count)."""
    from megasnow.quality.budget import parse_token_count as parse

    try:
        return parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def resolve_device(name):
    """The --device value as a string ('auto' resolved); a device this machine lacks is one error line."""
    from megasnow.utils.device import resolve_device as resolve

    return str(resolve(name, "--device"))


def add_executor_args(p):
    p.add_argument("--executor", choices=["local", "ray"], default="local", help="run shards in local processes or on Ray")
    p.add_argument("--workers", type=int, default=1,
                   help="parallel shard workers (processes, one shard at a time each): the way to use more cores")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local Ray)")


def add_strict_arg(p):
    p.add_argument("--strict", action="store_true",
                   help="stop (exit 2) at the first malformed record or damaged input shard instead of reporting it "
                        "and keeping the readable records")


def build_parser():
    parser = ArgumentParser(prog="annotate.py", description=__doc__, epilog=EXAMPLES)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,score,select,eval}")

    t = sub.add_parser("train", help="train an annotator (frozen encoder or full fine-tuning)")
    t.add_argument("--positives", nargs="*", default=[], help="JSONL/Parquet high-quality code files (text field)")
    t.add_argument("--instructions", nargs="*", default=[], help="JSONL/Parquet problem/solution data")
    t.add_argument("--negatives", nargs="+", required=True, help="phase-1 document shards (negatives drawn at random)")
    t.add_argument("--output", required=True, help="annotator folder to write (new or empty)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing annotator in --output")
    t.add_argument("--text-field", default="text", help="text field of --positives records")
    t.add_argument("--negative-text-field", default="text", help="text field of --negatives records")
    t.add_argument("--problem-field", default="problem", help="problem field of --instructions records")
    t.add_argument("--solution-field", default="solution", help="solution field of --instructions records")
    t.add_argument("--comment-prefix", default="# ", help="prefix for the problem lines above the solution")
    t.add_argument("--max-positives", type=int, default=None, help="at most this many positives per source")
    t.add_argument("--benchmark", nargs="*", default=[], help="benchmark files (JSONL/Parquet: task_id + prompt/"
                   "canonical_solution/text/code) no positive may match, besides HumanEval (always checked)")
    t.add_argument("--on-benchmark-match", choices=["drop", "refuse"], default="drop",
                   help="a positive matching a benchmark: drop it (and report), or refuse to train")
    t.add_argument("--mode", choices=["frozen", "full"], default="frozen", help="train the head only, or everything")
    t.add_argument("--encoder", default=None, help="HF encoder folder (default: bundled all-MiniLM-L6-v2)")
    t.add_argument("--pooling", choices=["mean", "cls"], default="mean", help="how token states become one vector")
    t.add_argument("--max-length", type=int, default=512, help="encoder window (tokens, specials included)")
    t.add_argument("--epochs", type=int, default=None, help="default: 200 frozen / 3 full")
    t.add_argument("--lr", type=float, default=None, help="default: 5e-3 frozen / 3e-5 full")
    t.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs")
    t.add_argument("--batch-size", type=int, default=None, help="examples per optimizer step (default: per mode)")
    t.add_argument("--heldout-fraction", type=float, default=0.1, help="share of each class held out")
    t.add_argument("--save-splits", default=None, help="folder to write train.jsonl / heldout.jsonl")
    t.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    t.add_argument("--seed", type=int, default=0, help="negative sampling, split and initialisation")
    add_strict_arg(t)

    s = sub.add_parser("score", help="score document shards (three-window rule), resumable")
    s.add_argument("--input", nargs="+", required=True, help="JSONL/Parquet shards, folders or globs")
    s.add_argument("--annotator", required=True, help="trained annotator folder")
    s.add_argument("--output", required=True, help="folder for <shard>.scores.jsonl files")
    s.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    s.add_argument("--batch-tokens", type=int, default=None,
                   help="padded tokens per encoder batch (default: 16384 on CUDA, 2048 on CPU)")
    s.add_argument("--chunk-docs", type=int, default=1024, help="documents length-sorted together")
    s.add_argument("--text-field", default="text", help="field holding the document text")
    s.add_argument("--id-field", default="id", help="field copied as the document id (default id: shard:line)")
    s.add_argument("--lang-field", default="lang", help="field copied as the language (selection is per language)")
    s.add_argument("--keep-fields", nargs="*", default=[], help="extra fields copied into the scores")
    s.add_argument("--retries", type=int, default=2, help="retries of a failing shard")
    s.add_argument("--overwrite", action="store_true",
                   help="score again the shards of --output whose scores were made by another annotator, other "
                        "field settings or an input shard that has changed since (refused without it)")
    s.add_argument("--threads", type=int, default=0,
                   help="torch threads per worker; 0 = the cores split between the workers (OMP_NUM_THREADS, when set, "
                        "counts as the cores), or 1 if OMP_WAIT_POLICY is set to something other than PASSIVE")
    add_executor_args(s)
    add_strict_arg(s)

    c = sub.add_parser("select", help="per-language top fraction up to a token budget")
    c.add_argument("--documents", nargs="+", required=True, help="the document shards that were scored")
    c.add_argument("--scores", required=True, help="scores folder written by `score`")
    c.add_argument("--tokenizer", required=True, help="project tokenizer (.model or tokenizer.json)")
    c.add_argument("--budget-tokens", type=parse_token_count, required=True, help="e.g. 12.5B")
    c.add_argument("--output", required=True, help="folder for selected/ shards and the report")
    c.add_argument("--text-field", default="text", help="field holding the document text")
    c.add_argument("--mix-tolerance-pp", type=float, default=1.0, help="flag a language share off by more")
    add_executor_args(c)
    add_strict_arg(c)

    e = sub.add_parser("eval", help="alignment report: ROC-AUC of benchmark solutions vs random files")
    e.add_argument("--annotator", required=True, help="trained annotator folder")
    e.add_argument("--corpus", nargs="+", required=True, help="corpus shards to draw random files from")
    e.add_argument("--num-random", type=int, default=1000, help="random corpus files to score")
    e.add_argument("--benchmark", nargs="*", default=[], help="extra benchmark solution files (JSONL/Parquet)")
    e.add_argument("--benchmark-fields", default=None,
                   help="comma-separated fields concatenated per record (default: as train --benchmark reads them: "
                        "text; else prompt + canonical_solution; else code)")
    e.add_argument("--no-humaneval", action="store_true", help="skip HumanEval's canonical solutions")
    e.add_argument("--include-seen", action="store_true",
                   help="keep solutions and corpus files the annotator trained on (left out by default when "
                        "the folder records them in seen_texts.npy)")
    e.add_argument("--heldout", default=None, help="held-out JSONL (text, label) to re-evaluate")
    e.add_argument("--report", default=None, help="also write the report as JSON here")
    e.add_argument("--batch-tokens", type=int, default=None, help="default: 16384 on CUDA, 2048 on CPU")
    e.add_argument("--text-field", default="text", help="field holding the document text")
    e.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    e.add_argument("--seed", type=int, default=0, help="random file sampling")
    add_strict_arg(e)
    return parser


def report_damaged(damaged):
    """on_damaged callback: one warning line per shard that stopped being readable (its records are kept)."""
    if isinstance(damaged, dict):
        warn(f"{damaged['input']}: unreadable after {damaged['records_read']} records ({damaged['error']}); "
             f"scored the records before the damage (--strict stops instead)")
    else:
        warn(f"{damaged.describe()} (--strict stops instead)")


def cmd_train(args):
    from megasnow.quality.train import TrainConfig, train_annotator
    from megasnow.quality.training_data import PositiveSource, build_training_set, write_examples

    from megasnow.quality.annotator import check_encoder_settings

    device = resolve_device(args.device)  # a missing CUDA is refused before any work
    check_output_folder(args.output, args.overwrite)
    check_encoder_settings(args.encoder, args.max_length, "--encoder", "--max-length")  # before the data is read
    sources = []
    if args.positives:
        sources.append(PositiveSource(args.positives, "code", text_field=args.text_field, limit=args.max_positives))
    if args.instructions:
        sources.append(PositiveSource(args.instructions, "instruction", problem_field=args.problem_field,
                                      solution_field=args.solution_field, comment_prefix=args.comment_prefix,
                                      limit=args.max_positives))
    if not sources:
        fail("train: give --positives and/or --instructions")
    train, heldout, stats = build_training_set(sources, args.negatives, args.heldout_fraction, args.seed,
                                               args.negative_text_field, strict=args.strict, on_damaged=report_damaged,
                                               benchmarks=args.benchmark, on_benchmark_match=args.on_benchmark_match)
    leaked = stats["benchmark_matches"]
    if leaked["dropped"]:
        tasks = ", ".join(f"{name}: {n}" for name, n in leaked["tasks"].items())
        warn(f"dropped {leaked['dropped']} positives matching evaluation benchmarks ({tasks}; first: "
             f"{'; '.join(leaked['examples'][:3])}): benchmark solutions measure alignment, they are not training data")
    print(f"training data: {json.dumps(stats)}", flush=True)
    cfg = TrainConfig(mode=args.mode, encoder=args.encoder, pooling=args.pooling, max_length=args.max_length,
                      epochs=args.epochs, lr=args.lr, patience=args.patience, batch_size=args.batch_size,
                      device=device, seed=args.seed)
    # The splits are cheap to write again: a run that fails (bad encoder folder, Ctrl-C) leaves none behind.
    with removed_on_failure(args.save_splits) if args.save_splits else contextlib.nullcontext():
        if args.save_splits:
            write_examples(os.path.join(args.save_splits, "train.jsonl"), train)
            write_examples(os.path.join(args.save_splits, "heldout.jsonl"), heldout)
        metrics = train_annotator(train, heldout, args.output, cfg)
    h = metrics["heldout"]
    print(f"saved {args.output}: best epoch {metrics['best_epoch']}/{metrics['epochs_run']}, held-out ROC-AUC "
          f"{h['roc_auc']:.4f} accuracy {h['accuracy']:.4f} precision {h['precision']:.4f} recall {h['recall']:.4f}; "
          f"{len(train):,} train / {len(heldout):,} held-out examples in {metrics['train_seconds']:.0f} s")


def check_output_folder(path, overwrite):
    """`train --output`: a file, or a folder that holds something, is refused unless --overwrite (training
    replaces it whole; nothing there is resumable: the annotator is written when training ends)."""
    if os.path.isfile(path):
        fail(f"--output {path}: is a file; give a folder for the annotator")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        what = "an annotator" if os.path.exists(os.path.join(path, "annotator.json")) else "files"
        fail(f"--output {path}: already holds {what}; nothing was changed. Give a new folder, or --overwrite to "
             f"train again and replace it")


def check_annotator_flag(path):
    """One line naming --annotator when it is a file (e.g. the tokenizer's .model), before torch loads. (A missing
    one is reported by megasnow.quality.annotator, after the inputs are checked, with the same advice.)"""
    if os.path.exists(path) and not os.path.isdir(path):
        fail(f"--annotator {path}: is a file, not a folder; give the annotator folder that `tools/annotate.py train "
             f"--output` wrote (it holds annotator.json and the fine-tuned encoder)")


def cmd_score(args):
    from megasnow.quality.score import score_corpus

    summary = score_corpus(
        args.input, args.output, args.annotator, executor=args.executor, workers=args.workers,
        ray_address=args.ray_address, device=resolve_device(args.device), batch_tokens=args.batch_tokens or 0,
        chunk_docs=args.chunk_docs, text_field=args.text_field, id_field=args.id_field, lang_field=args.lang_field,
        keep_fields=list(args.keep_fields), retries=args.retries, threads=args.threads, strict=args.strict,
        on_damaged=report_damaged, overwrite=args.overwrite,
    )
    skipped = ", ".join(f"{n:,} {reason}" for reason, n in sorted(summary["skipped"].items())) or "none"
    damaged = len(summary["unreadable_shards"])
    print(f"scored {summary['scored']:,} of {summary['documents']:,} documents in {summary['shards']} shards "
          f"({summary['shards_skipped_done']} already done"
          f"{f', {damaged} damaged (records before the damage scored)' if damaged else ''}); skipped: {skipped}; "
          f"{summary['rate_this_run'] or 'nothing to score'} this run; scores in {args.output}")


def cmd_select(args):
    from megasnow.quality.selection import select_documents

    report = select_documents(args.documents, args.scores, args.output, args.tokenizer, args.budget_tokens,
                              executor=args.executor, workers=args.workers, ray_address=args.ray_address,
                              text_field=args.text_field, mix_tolerance_pp=args.mix_tolerance_pp, strict=args.strict,
                              budget_name="--budget-tokens")
    with open(os.path.join(args.output, "selection_report.md"), encoding="utf-8") as f:
        print(f.read())
    if not report["mix_within_tolerance"]:
        warn(f"language mix deviates by {report['max_share_deviation_pp']:.3f} pp (> {args.mix_tolerance_pp:.1f} pp)")
    print(f"selected {report['selected_tokens']:,} tokens in {report['selected_documents']:,} documents: "
          f"{os.path.join(args.output, 'selected')}")


def cmd_eval(args):
    from megasnow.quality.annotator import load_annotator
    from megasnow.quality.evaluate import (WindowProgress, alignment_report, benchmark_solutions, format_report,
                                           humaneval_solutions)
    from megasnow.utils.atomic import atomic_write_text

    benchmarks = {}
    if not args.no_humaneval:
        benchmarks["humaneval"] = humaneval_solutions()
    if args.benchmark:
        fields = tuple(f.strip() for f in (args.benchmark_fields or "").split(",") if f.strip()) or None
        benchmarks["user"] = benchmark_solutions(args.benchmark, fields, strict=args.strict, on_damaged=report_damaged)
    if not benchmarks:
        fail("eval: nothing to evaluate (--no-humaneval and no --benchmark): give --benchmark FILE")
    annotator = load_annotator(args.annotator, device=resolve_device(args.device))
    progress = WindowProgress("eval: score")  # the random files, then each benchmark: windows, rate, ETA
    try:
        report = alignment_report(annotator, benchmarks, args.corpus, args.num_random, args.seed, args.batch_tokens,
                                  args.text_field, args.heldout, exclude_seen=not args.include_seen,
                                  strict=args.strict, on_damaged=report_damaged, on_batch=progress)
    finally:
        progress.close()
    print(format_report(report))
    if args.report:
        atomic_write_text(args.report, json.dumps(report, indent=2))
        print(f"report written to {args.report}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    if "torch" not in sys.modules:  # libgomp reads it once, when torch loads
        # Waiting OpenMP threads sleep instead of spinning: several threads are then never slower than one on a
        # shared machine (benchmarks/results/annotate_throughput.md), and scoring uses every core by default.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command in ("score", "eval"):
        check_annotator_flag(args.annotator)  # before torch loads: a wrong path fails at once
    {"train": cmd_train, "score": cmd_score, "select": cmd_select, "eval": cmd_eval}[args.command](args)
    return 0


def interrupt_advice(argv):
    """The end of the Ctrl-C line: train keeps nothing (the annotator is written when training ends); score
    resumes."""
    words = [w for w in argv if not w.startswith("-")]
    if words[:1] == ["train"]:
        return ("nothing was kept (the annotator is written when training ends; --mode full keeps its best epoch so "
                "far in --output); rerun to train again")
    return INTERRUPTED_RESUMABLE


if __name__ == "__main__":
    sys.exit(run_tool(main, prog="annotate.py", on_interrupt=interrupt_advice(sys.argv[1:])))
