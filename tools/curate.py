"""Phase-1 code curation front-end: raw code (Parquet/JSONL/repo folders) -> deduplicated, decontaminated documents.

python tools/curate.py --input PATH... --output DIR [--config FILE] [--executor local|ray] [--workers N] [key=value ...]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megasnow.config import ConfigError, describe_config, load_config  # noqa: E402
from megasnow.curate.config import CurateConfig  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (set in --config YAML or as key=value):\n" + "\n".join(describe_config(CurateConfig)))
    parser.add_argument("--input", nargs="+", required=True,
                        help="Parquet/JSONL files, folders of them, or folders of repositories")
    parser.add_argument("--output", required=True, help="output folder (rerun the same command to resume)")
    parser.add_argument("--config", help="YAML config file")
    parser.add_argument("--executor", choices=["local", "ray"], help="overrides `executor`")
    parser.add_argument("--workers", type=int, help="overrides `workers`")
    parser.add_argument("--ray-address", help="Ray cluster address (default: start Ray on this machine)")
    parser.add_argument("overrides", nargs="*", help="config overrides like near_dedup.threshold=0.8")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.executor:
        overrides.append(f"executor={args.executor}")
    if args.workers is not None:
        overrides.append(f"workers={args.workers}")
    if args.ray_address:
        overrides.append(f"ray_address={args.ray_address}")
    try:
        cfg = load_config(CurateConfig, args.config, overrides)
    except ConfigError as e:
        parser.error(str(e))
    from megasnow.curate.pipeline import run_pipeline

    stats = run_pipeline(args.input, args.output, cfg)
    total = stats["stages"]
    summary = {stage: {"files_in": c["all"]["files_in"], "files_out": c["all"]["files_out"],
                       "removed": c["all"]["removed"]} for stage, c in total.items()}
    print(json.dumps({"stages": summary, "bad_input": stats["bad_input"],
                      "unreadable_shards": stats["unreadable_shards"], "seconds": stats["seconds"]}, indent=1))
    print(f"documents in {os.path.join(args.output, 'documents')}; report in {os.path.join(args.output, 'stats.json')}")


if __name__ == "__main__":
    main()
