#!/usr/bin/env python
"""Phase-3 synthesis: top-scored phase-2 documents seed an instruct LLM that writes high-quality code files
(OSS-Instruct for pretraining); answers are cached, checked, deduplicated, decontaminated and written as JSONL.

Rerun the same command to resume: only requests never answered are asked again. See docs/synthesis.md.
"""
import json
import os
import re
import sys

from megasnow.config import describe_config
from megasnow.generation.protocol import failure_advice as protocol_failure_advice
from megasnow.utils.cli import ArgumentParser, fail, run_tool

EXAMPLES = """examples:
  # against running OpenAI-compatible servers (vLLM replicas, megasnow.serve ...)
  synthesize.py --config examples/synthesis/openai.yaml --seeds phase2/selected --output phase3/ \\
      --base-url http://node1:8000/v1 http://node2:8000/v1
  # one driver per node beside its own vLLM, then one post-processing pass over all of them
  synthesize.py --config cfg.yaml --output out-node3 --stage generate --shard 3/8
  synthesize.py --config cfg.yaml --output merged --stage postprocess --responses out-node*
"""


_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def split_overrides(values, overrides):
    """Items of a multi-value option that are really `key=value` overrides (argparse gives them to the option
    when they follow it) go back to `overrides`."""
    kept = []
    for v in values or []:
        (overrides if _OVERRIDE.match(v) else kept).append(v)
    return kept


def seeds_are_reference(config, overrides):
    """Whether --seeds should replace postprocess.reference too: the config (YAML + the other overrides) sets it
    to the same list as seeds.documents (the shipped configs check outputs against the seed corpus), and no
    override sets postprocess.reference itself."""
    from megasnow.synth.config import load_synth_config, overridden

    if overridden("postprocess.reference", overrides):
        return False
    cfg = load_synth_config(config, overrides)
    return bool(cfg.postprocess.reference) and cfg.postprocess.reference == cfg.seeds.documents


def parse_shard(text):
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not int(m.group(1)) < int(m.group(2)):
        fail(f"--shard {text!r}: write it as INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/4")
    return int(m.group(1)), int(m.group(2))


def build_parser():
    from megasnow.synth.config import SynthConfig

    p = ArgumentParser(prog="synthesize.py", description=__doc__,
                       epilog=EXAMPLES + "\nconfig keys (set in --config YAML or as key=value):\n"
                       + "\n".join(describe_config(SynthConfig)))
    p.add_argument("--config", help="YAML config file (see examples/synthesis/)")
    p.add_argument("--output", required=True, help="output folder (rerun the same command to resume)")
    p.add_argument("--seeds", nargs="+", help="seed document shards/folders (sets seeds.documents, and "
                   "postprocess.reference too where the config sets it to its seeds.documents, as the shipped "
                   "configs do; a postprocess.reference=... override wins)")
    p.add_argument("--base-url", nargs="+", help="OpenAI-compatible base URLs (sets backend.base_urls)")
    p.add_argument("--model", help="sets backend.model")
    p.add_argument("--stage", choices=["all", "generate", "postprocess"], default="all",
                   help="generate: only ask and cache; postprocess: only check and write")
    p.add_argument("--shard", help="INDEX/COUNT: this driver's share of the requests (sets execution.*)")
    p.add_argument("--responses", nargs="+", default=[],
                   help="other drivers' output folders whose answers count as cached (merge by concatenation)")
    p.add_argument("--executor", choices=["local", "ray"], help="sets execution.executor")
    p.add_argument("--allow-config-change", action="store_true",
                   help="ask every request again into an --output whose cached answers were all made with another "
                        "config (refused otherwise; the old answers stay there, unused)")
    p.add_argument("overrides", nargs="*", help="config overrides like sampling.max_tokens=512")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from megasnow.synth.config import load_synth_config, yaml_key_names

    overrides = list(args.overrides)
    args.seeds, args.base_url = split_overrides(args.seeds, overrides), split_overrides(args.base_url, overrides)
    args.responses = split_overrides(args.responses, overrides)
    if args.config and not os.path.isfile(args.config):
        fail(f"--config {args.config}: no such file")
    names = {}
    if args.seeds:
        names["seeds.documents"] = "--seeds"
        if seeds_are_reference(args.config, overrides):
            overrides.append(f"postprocess.reference={json.dumps(args.seeds)}")
            names["postprocess.reference"] = "--seeds"
        overrides.append(f"seeds.documents={json.dumps(args.seeds)}")
    if args.base_url:
        overrides.append(f"backend.base_urls={json.dumps(args.base_url)}")
    if args.model is not None:
        overrides.append(f"backend.model={json.dumps(args.model)}")
        names["backend.model"] = "--model"
    if args.shard:
        index, count = parse_shard(args.shard)
        overrides += [f"execution.shard_index={index}", f"execution.num_shards={count}"]
    if args.executor:
        overrides.append(f"execution.executor={args.executor}")
    cfg = load_synth_config(args.config, overrides)  # YAML paths relative to its folder, flags' to the cwd
    # an error about a path key names the YAML file it came from, or the flag that set it
    names = {**yaml_key_names(args.config, overrides), **names, "output": "--output",
             "extra_responses": "--responses", "allow_config_change": "--allow-config-change"}

    from megasnow.generation.openai_backend import ModelNotServedError
    from megasnow.synth.pipeline import RequestsRefused, run_synthesis

    try:
        s = run_synthesis(cfg, args.output, stage=args.stage, extra_responses=args.responses, names=names,
                          allow_config_change=args.allow_config_change)
    except ModelNotServedError as e:
        if args.model is None:
            raise
        fail(e.for_flag("--model"))  # name the flag the user typed
    except RequestsRefused as e:
        # every request of this run refused as bad (HTTP 4xx, auth) and none answered: a config mistake
        # (backend.model, sampling.*, seed length), the user's to fix: one `error:` line, exit 2 (the CLI rule), no
        # summary, and a folder this run created is removed again (run_synthesis)
        fail(failure_advice(e.generation).replace("\n", "; "))
    for g in s["generation_this_run"]:
        print(f"shard {g['shard']}/{g['num_shards']}: {g['planned']} requests, {g['cached_before']} cached, "
              f"{g['answered']} answered now, {sum(g['failed'].values())} failed{' ' + str(g['failed']) if g['failed'] else ''}, "
              f"{g['retries']} retries, {g['requests_per_s']} req/s, {g['output_tokens_per_s']} output tok/s")
    if "outputs" in s:
        o, r = s["outputs"], s["requests"]
        print(f"requests: {r['answered']}/{r['planned']} answered; outputs: {o['kept']} kept, {o['dropped']} dropped "
              f"{json.dumps(o['dropped_by_reason'])}")
        print("language mix (kept / target): " + ", ".join(
            f"{lang} {100 * m['achieved_share']:.0f}%/{100 * m['target_share']:.0f}%"
            for lang, m in s["language_mix"].items()))
        print(f"documents in {os.path.join(args.output, 'data')} ({len(s['output_shards'])} shards); summary in "
              f"{os.path.join(args.output, 'summary.md')}")
    failed = [g for g in s["generation_this_run"] if g["failed"]]
    if failed:  # some answered, or some failures a rerun may cure (server down, timeouts after the retries)
        print(failure_advice(failed), file=sys.stderr)
        return 1
    return 0


def failure_advice(generation):
    """The closing lines after failed requests: the counts by kind, the first message, and what to do about it."""
    kinds, firsts = {}, {}
    for g in generation:
        for k, n in g["failed"].items():
            kinds[k] = kinds.get(k, 0) + n
        for k, message in g.get("first_errors", {}).items():
            firsts.setdefault(k, message)
    examples = [e for g in generation for e in g.get("failed_examples", [])]
    first_line = (f"{sum(kinds.values())} requests failed {kinds} (not cached)"
                  + (f"; first: {examples[0]}" if examples else ""))
    return first_line + "\n" + protocol_failure_advice(
        kinds, firsts, change="sampling.*, backend.model, the template",
        too_long_fix="lower sampling.max_tokens or the seed length (seeds.max_lines, seeds.head_tokens) to fit the "
                     "model's context",
        already_shown=first_line)


if __name__ == "__main__":
    sys.exit(run_tool(main))
