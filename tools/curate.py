"""Phase-1 code curation front-end: raw code (Parquet/JSONL/repo folders) -> deduplicated, decontaminated documents.

python tools/curate.py --input PATH... --output DIR [--config FILE] [--executor local|ray] [--workers N] [--strict]
                       [key=value ...]
"""
import json
import os
import sys

from megasnow.config import describe_config, load_config
from megasnow.curate.config import CurateConfig
from megasnow.utils.cli import ArgumentParser, fail, run_tool, warn


def build_parser():
    parser = ArgumentParser(
        description=__doc__,
        epilog="config keys (set in --config YAML or as key=value):\n" + "\n".join(describe_config(CurateConfig)))
    parser.add_argument("--input", nargs="+", required=True,
                        help="Parquet/JSONL files, folders of them, or folders of repositories")
    parser.add_argument("--output", required=True, help="output folder (rerun the same command to resume)")
    parser.add_argument("--config", help="YAML config file")
    parser.add_argument("--executor", choices=["local", "ray"], help="overrides `executor` (default: local)")
    parser.add_argument("--workers", type=int, help="overrides `workers` (default: 1)")
    parser.add_argument("--ray-address", help="Ray cluster address (default: start Ray on this machine)")
    parser.add_argument("--strict", action="store_true",
                        help="inputs without any source file are an error (exit 2) instead of a warning")
    parser.add_argument("overrides", nargs="*", help="config overrides like near_dedup.threshold=0.8")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    overrides = list(args.overrides)
    if args.executor:
        overrides.append(f"executor={args.executor}")
    if args.workers is not None:
        if args.workers < 1:
            fail(f"--workers must be >= 1, got {args.workers}")
        overrides.append(f"workers={args.workers}")
    if args.ray_address:
        overrides.append(f"ray_address={args.ray_address}")
    if args.config is not None and not os.path.isfile(args.config):
        fail(f"--config {args.config!r} is not a file; check the path")
    cfg = load_config(CurateConfig, args.config, overrides)
    from megasnow.curate.pipeline import run_pipeline
    from megasnow.curate.summary import summary_lines

    stats = run_pipeline(args.input, args.output, cfg, strict=args.strict)
    summary = {stage: {"files_in": c["all"]["files_in"], "files_out": c["all"]["files_out"],
                       "removed": c["all"]["removed"]} for stage, c in stats["stages"].items()}
    print(json.dumps({"stages": summary, "bad_input": stats["bad_input"], "excluded_dirs": stats["excluded_dirs"],
                      "unreadable_shards": stats["unreadable_shards"], "seconds": stats["seconds"]}, indent=1))
    if stats["empty_input"]:
        warn(f"no source files found in {' '.join(args.input)}: nothing was curated (--strict makes this an error)")
    for line in summary_lines(stats, args.output, args.input):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
