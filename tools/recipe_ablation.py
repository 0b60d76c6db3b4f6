#!/usr/bin/env python
"""The recipe's ablations at your scale: from one phase-1 checkpoint, continued pretraining on annotator-selected vs
random data and on k repeats of a selection vs one pass over a k-times larger one, same tokens, several seeds;
measured (held-out loss, benchmark-solution loss, pass@1, the annotator's ROC-AUC) and reported. See docs/recipe.md."""
import json
import os
import sys

from megasnow.utils.cli import ArgumentParser, removed_on_failure, run_tool

EXAMPLES = """examples:
  python examples/recipe/prepare_local.py --workdir runs/recipe/data          # real code of this machine
  recipe_ablation.py run examples/recipe/local-cpu.yaml --output runs/recipe/ablation
  recipe_ablation.py run examples/recipe/local-cpu.yaml --output runs/recipe/ablation ablation.seeds=[0,1,2,3,4]
  recipe_ablation.py run CONFIG.yaml --output OUT --dry-run       # the plan: arms, seeds, matched token counts
  recipe_ablation.py run CONFIG.yaml --output OUT --dry-run --json   # the same plan as JSON
  recipe_ablation.py report runs/recipe/ablation --output recipe.md   # also a quickstart work folder
  recipe_ablation.py config-help                                  # every config key
"""


def build_parser():
    p = ArgumentParser(prog="recipe_ablation.py", description=__doc__, epilog=EXAMPLES)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="prepare, train and measure every arm x seed (resumable), then report")
    r.add_argument("config", help="ablation YAML (examples/recipe/*.yaml)")
    r.add_argument("overrides", nargs="*", help="key.sub=value overrides (values parsed as YAML)")
    r.add_argument("--output", required=True, help="output folder (a rerun skips finished parts)")
    r.add_argument("--dry-run", action="store_true", help="print the plan (arms, seeds, steps, tokens per run, "
                                                          "outputs) and exit; nothing is written")
    r.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON (plan.json's content)")
    r.add_argument("--no-report", action="store_true", help="skip report.md")
    s = sub.add_parser("report", help="write the markdown report (+ PNGs) of an ablation or quickstart folder")
    s.add_argument("folder", help="an ablation output folder or a quickstart work folder")
    s.add_argument("--output", default=None, help="markdown file (default: FOLDER/report.md)")
    s.add_argument("--no-alignment", action="store_true", help="quickstart folder: do not compute the annotator's "
                                                               "ROC-AUC when quality/alignment.json is missing")
    sub.add_parser("config-help", help="list every config key with its type and default")
    return p


def _mean_spread(d):
    """'mean ± std' of a stats.describe dict; with one seed the spread is not measured: 'mean ± n/a'."""
    if not d.get("n"):
        return "n/a"
    if d["std"] is None:
        return f"{d['mean']:.4f} ± n/a"
    return f"{d['mean']:.4f} ± {d['std']:.4f}"


def _plan_lines(runner, plan, out):
    """The --dry-run plan in words: arms, seeds, steps and tokens per run, the phase-1 checkpoint, where outputs go."""
    cfg = runner.cfg
    n_arms, n_seeds = len(plan["arms"]), len(plan["seeds"])
    base = (f"from the given checkpoint {cfg.base.checkpoint}" if cfg.base.checkpoint else
            f"trained here on data.phase1 for {cfg.base.steps} steps x {plan['global_batch_size']} x "
            f"{plan['seq_len']} = {cfg.base.steps * plan['global_batch_size'] * plan['seq_len']:,} tokens (base/)")
    lines = [f"plan: {n_arms} arm(s) x {n_seeds} seed(s) = {len(plan['runs'])} continued-pretraining runs, each from "
             f"one phase-1 checkpoint {base}",
             f"every run: {plan['steps']} optimizer steps x {plan['global_batch_size']} sequences x {plan['seq_len']} "
             f"tokens = {plan['tokens_per_arm']:,} tokens",
             "arms:"]
    lines += [f"  {a['name']:<16} {a['description']}" for a in plan["arms"]]
    lines.append(f"seeds: {', '.join(str(s) for s in plan['seeds'])} (each sets the sample order and the random "
                 f"arm's draw)")
    lines.append(f"annotators: {', '.join(plan['annotators'])}; benchmarks: {', '.join(plan['benchmarks'])}")
    lines.append(f"outputs: {out}/ (data/, quality/<annotator>/, base/, "
                 f"arms/<arm>/seed<s>/ for each run, summary.json, report.md)")
    lines.append("nothing was run or written (--dry-run); --json prints this plan as JSON")
    return lines


def _summary_lines(summary, out):
    lines = [f"runs: {summary['runs_finished']} of {summary['runs_planned']} finished; "
             f"{summary['plan']['token_matching']}; token counts matched: {summary['tokens_matched']}"]
    for name, al in summary["alignment"].items():
        lines.append(f"annotator {name}: ROC-AUC " + ", ".join(f"{k} {v:.4f}" for k, v in al["roc_auc"].items()))
    for name, s in summary["arms"].items():
        bl = ", ".join(f"{b} {_mean_spread(d)}" for b, d in s["benchmark_loss"].items())
        n = len(s["seeds"])
        lines.append(f"{name:<16} held-out {_mean_spread(s['heldout_loss'])}; solution loss {bl} "
                     f"({n} seed{'s' if n != 1 else ''})")
    for c in summary["comparisons"]:
        if c["diff"] is not None:
            se = "n/a" if c["se"] is None else f"{c['se']:.4f}"
            lines.append(f"{c['a']} - {c['b']} ({c['measure']}): {c['diff']:+.4f} (SE {se}): {c['verdict']}")
    lines.append(f"outputs: {out} (summary.json, report.md)")
    return lines


def main(argv=None):
    parser = build_parser()
    # key=value overrides may come before or after the options (argparse alone takes them only before)
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if e.startswith("-") or "=" not in e or args.command != "run"]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    if args.command == "config-help":
        from megasnow.recipe.config import help_text

        print(help_text())
        return 0
    if args.command == "report":
        from megasnow.recipe.report import write_recipe_report

        out = write_recipe_report(args.folder, args.output or os.path.join(args.folder, "report.md"),
                                  compute_alignment=not args.no_alignment)
        print(f"report ({out['layout']} layout): {out['markdown']}; plots: {len(out['plots'])} "
              f"({', '.join(os.path.basename(p) for p in out['plots'])})")
        return 0
    if args.json and not args.dry_run:
        parser.error("--json goes with --dry-run (a run writes plan.json and summary.json in its output folder)")
    from megasnow.recipe.config import check_inputs, load_ablation_config

    with removed_on_failure(args.output):  # a bad config or input leaves nothing behind
        cfg = load_ablation_config(args.config, args.overrides)
        check_inputs(cfg)
        from megasnow.recipe.runner import AblationRunner

        # with --json, stdout holds the JSON alone: progress lines go to stderr
        log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.json else None
        runner = AblationRunner(cfg, args.output, **({"log": log} if log else {}))
        runner.check_inputs()  # document counts, before anything is written or trained
        if args.dry_run:
            plan = runner.plan()
            print(json.dumps(plan, indent=1) if args.json else "\n".join(_plan_lines(runner, plan,
                                                                                     os.path.abspath(args.output))))
            for line in runner.schedule_warnings():
                print(line, file=sys.stderr)
            return 0
    summary = runner.run(report=not args.no_report)
    print("\n".join(_summary_lines(summary, os.path.abspath(args.output))))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
