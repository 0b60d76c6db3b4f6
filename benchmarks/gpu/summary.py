"""The GPU suite's summary: every figure beside its target from the issues, with a status per row, and the device,
driver and library versions it was measured with. Reads only the files the tasks wrote (no torch import), so the
runner rewrites it after every task and a run that is cut off still has an up-to-date summary.

Statuses: PASS / MISS (the target is met / not met on a GPU), ERROR (the task failed, timed out or wrote no
figure: the note says which and where its log is), NOT RUN (not selected, or the suite's deadline came first),
not built (the stage does not exist yet), INFO (a figure without a target), CPU-DRY-RUN (any figure from a run
without a GPU: never a PASS).
"""
import csv
import io
import json
import os
import xml.etree.ElementTree as ET

PASS, MISS, ERROR, NOT_RUN, NOT_BUILT, INFO = "PASS", "MISS", "ERROR", "NOT RUN", "not built", "INFO"
DRY = "CPU-DRY-RUN"
STATUSES = (PASS, MISS, ERROR, NOT_RUN, NOT_BUILT, INFO, DRY)
COLUMNS = ("id", "step", "check", "figure", "target", "status", "note")
KERNEL_TARGET_TOKENS = 32768
TARGET_MEGATRON = "faster, byte-identical .bin/.idx"


def _load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _load_csv(path):
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return None


def _num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


class Rows:
    """Collects rows; knows whether a verdict may be PASS/MISS (a GPU run) and why a figure is missing."""

    def __init__(self, tasks, gpu, res=""):
        self.tasks, self.gpu, self.res, self.rows = tasks, gpu, res, []

    def add(self, id, step, check, figure, target, status, note=""):
        if not self.gpu and status in (PASS, MISS):
            status = DRY  # a run without a GPU never passes (nor misses) a GPU target
        self.rows.append(dict(id=id, step=step, check=check, figure=figure, target=target, status=status,
                              note=note))

    def verdict(self, ok):
        return PASS if ok else MISS

    def missing(self, task_name, what="no figure in its output"):
        """(status, note) for a figure that is absent: why, from the task's record."""
        t = self.tasks.get(task_name)
        if t is None or t["status"] == "not-run":
            return NOT_RUN, (t or {}).get("note") or f"task {task_name} did not run"
        if t["status"] == "not-built":
            return NOT_BUILT, t.get("note", "")
        if t["status"] == "timeout":
            return ERROR, f"task {task_name} timed out after {t['seconds']:.0f}s (log: logs/{task_name}.log)"
        if t["status"] == "failed":
            return ERROR, f"task {task_name} failed with exit status {t['rc']} (log: logs/{task_name}.log)"
        return ERROR, f"task {task_name}: {what} (log: logs/{task_name}.log)"

    def absent(self, id, step, check, target, task_name, what="no figure in its output"):
        status, note = self.missing(task_name, what)
        self.add(id, step, check, "-", target, status, note)


def not_carried(res, module, wheel):
    """Why `module` is missing when its wheel was not in the carried folder (setup.json), else None."""
    s = _load_json(os.path.join(res, "setup.json"))
    if s is None or "carried" not in s or module in s["carried"]:
        return None
    return f"{wheel} not carried: no {wheel} wheel in {s.get('wheels_dir', '.whl')} (scripts/prepare_gpu_wheels.sh)"


def setup_rows(R, res):
    b = _load_json(os.path.join(res, "build.json"))
    s = _load_json(os.path.join(res, "setup.json"))
    if b is None:
        R.absent("0.build", 0, "C++ extension built in place (offline)", "builds and imports", "build")
    else:
        wheels = len((s or {}).get("wheels", []))
        fig = f"{b.get('method')} in {b.get('seconds')}s; {wheels} carried wheels installed"
        notes = "; ".join((s or {}).get("notes", []))
        R.add("0.build", 0, "C++ extension built in place (offline)", fig, "builds and imports",
              R.verdict(b.get("ok")) if b.get("ok") else ERROR, notes)


def correctness_rows(R, res):
    xml = os.path.join(res, "kernel_tests.xml")
    target = "all pass (compiled kernels, bf16 + fp32, odd shapes)"
    try:
        root = ET.parse(xml).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        n, fail, err, skip = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
        failed = [f"{c.get('classname', '').split('.')[-1]}::{c.get('name')}" for c in suite.iter("testcase")
                  if c.find("failure") is not None or c.find("error") is not None]
        fig = f"{n - fail - err - skip} passed, {fail} failed, {err} errors, {skip} skipped"
        R.add("1.kernel_tests", 1, "kernel tests on the device", fig, target,
              R.verdict(n > 0 and fail == err == 0), ("failing: " + ", ".join(failed[:4])) if failed else "")
    except (OSError, ET.ParseError, AttributeError):
        R.absent("1.kernel_tests", 1, "kernel tests on the device", target, "kernel-tests", "no junit XML")

    mc = _load_json(os.path.join(res, "model_check.json"))
    if mc is None:
        R.absent("1.model", 1, "whole model, kernels triton vs reference", "errors within tolerance", "model-check")
    for r in (mc or {}).get("results", []):
        check = f"whole model {r['preset']} ({r['layers']} layers) {r['dtype']}: triton vs reference"
        rid = f"1.model.{r['preset']}.{r['dtype']}"
        if "error" in r:
            R.add(rid, 1, check, "-", "errors within tolerance", ERROR, r["error"][:300])
            continue
        tol = r["tolerances"]
        fig = (f"logits {r['logits_rel_err']:.1e}, loss {r['loss_rel_err']:.1e}, worst grad "
               f"{r['grad_max_rel_err']:.1e} ({r['grad_worst_param']})")
        target = f"relative error (norm) <= {tol['logits']:g} / {tol['loss']:g} / {tol['grad']:g}"
        R.add(rid, 1, check, fig, target, R.verdict(r["ok"]),
              "" if not r.get("params_without_grad") else f"no gradient: {r['params_without_grad'][:3]}")

    pc = _load_json(os.path.join(res, "precision.json"))
    check, target = "bf16 vs fp32 training loss curve", "every step within {tol:.0%}; fp32 loss falls >= {drop:.0%}"
    if pc is None or pc.get("max_rel_diff") is None:
        R.absent("1.precision", 1, check, target.format(tol=0.03, drop=0.2), "precision")
    else:
        fig = (f"max per-step difference {pc['max_rel_diff']:.2%} (step {pc['worst_step']}), mean "
               f"{pc['mean_rel_diff']:.2%}; fp32 loss {pc['loss_fp32'][0]:.2f} -> {pc['loss_fp32'][-1]:.2f} over "
               f"{pc['steps']} steps")
        R.add("1.precision", 1, check, fig, target.format(tol=pc["tolerance"], drop=pc["min_drop"]),
              R.verdict(pc["ok"]), pc.get("model", ""))


def kernel_rows(R, res):
    rows = _load_csv(os.path.join(res, "kernels.csv"))
    ops_targets = [(op, mode) for op in ("rms_norm", "swiglu", "rope") for mode in ("fwd", "bwd")]
    if not rows:
        for op, mode in ops_targets:
            R.absent(f"2.{op}.{mode}", 2, f"{op} {mode}: % of copy bandwidth", ">= 85%", "kernels")
        for rid, check, target in (("2.ce_vs_liger", "cross entropy fwd+bwd vs Liger", "no slower than Liger"),
                                   ("2.ce_memory", "cross entropy extra memory", "<= one bf16 logits tensor"),
                                   ("2.lce_memory", "fused linear+CE peak memory", "<= 1/4 of unfused"),
                                   ("2.lce_speed", "fused linear+CE time", "within 10% of unfused")):
            R.absent(rid, 2, check, target, "kernels")
        return
    tokens = max(int(r["tokens"]) for r in rows)
    big = [r for r in rows if int(r["tokens"]) == tokens]
    below = "" if tokens >= KERNEL_TARGET_TOKENS or not R.gpu else f" (only {tokens} tokens measured: target is 32k+)"

    def get(op, mode, provider):
        return next((r for r in big if (r["op"], r["mode"], r["provider"]) == (op, mode, provider)), None)

    def why(r):
        return f"{r['provider']} {r['status']}: {r['note']}" if r else "row missing"

    for op, mode in ops_targets:
        r = get(op, mode, "megasnow")
        check = f"{op} {mode}: % of copy bandwidth at {tokens} tokens"
        if r and r["status"] == "ok":
            pct = float(r["pct_copy_bw"])
            fig = f"{pct:.1f}% ({float(r['value']):.4g} GB/s, {float(r['median_ms']):.3f} ms)"
            R.add(f"2.{op}.{mode}", 2, check, fig, ">= 85% (2048 hidden, 32k+ rows)",
                  R.verdict(pct >= 85 and tokens >= KERNEL_TARGET_TOKENS), below.strip() or r["note"])
        else:
            R.add(f"2.{op}.{mode}", 2, check, "-", ">= 85%", ERROR, why(r))

    ours, liger = get("cross_entropy", "fwdbwd", "megasnow"), get("cross_entropy", "fwdbwd", "liger")
    vocab = ours["shape"].split(",")[-1].rstrip("]") if ours else "?"
    check = f"cross entropy fwd+bwd vs Liger ({tokens} tokens, vocab {vocab})"
    no_liger = not_carried(R.res, "liger_kernel", "liger-kernel")
    if no_liger and not (liger and liger["status"] == "ok"):
        R.add("2.ce_vs_liger", 2, check, f"megasnow {float(ours['median_ms']):.3f} ms" if ours and
              ours["status"] == "ok" else "-", "no slower than Liger", NOT_RUN, no_liger)
    elif ours and ours["status"] == "ok" and liger and liger["status"] == "ok":
        a, b = float(ours["median_ms"]), float(liger["median_ms"])
        R.add("2.ce_vs_liger", 2, check, f"megasnow {a:.3f} ms vs Liger {b:.3f} ms ({b / a:.2f}x)",
              "no slower than Liger", R.verdict(a <= b))
    elif ours and ours["status"] == "ok" and not R.gpu:
        R.add("2.ce_vs_liger", 2, check, f"megasnow {float(ours['median_ms']):.3f} ms", "no slower than Liger", DRY,
              why(liger))
    else:
        R.add("2.ce_vs_liger", 2, check, "-", "no slower than Liger", ERROR, why(ours if not ours or
                                                                               ours["status"] != "ok" else liger))
    check = "cross entropy fwd+bwd extra memory"
    if ours and ours["status"] == "ok" and _num(ours["peak_extra_mib"]) is not None:
        logits_mib = tokens * int(vocab) * 2 / 2**20
        extra = float(ours["peak_extra_mib"])
        R.add("2.ce_memory", 2, check, f"{extra:.0f} MiB (one bf16 logits tensor: {logits_mib:.0f} MiB)",
              "<= one bf16 logits tensor", R.verdict(extra <= logits_mib * 1.01))
    else:
        R.add("2.ce_memory", 2, check, "-", "<= one bf16 logits tensor", DRY if not R.gpu else ERROR,
              "peak memory is measured on CUDA only" if not R.gpu else why(ours))

    ours = get("linear_cross_entropy", "fwdbwd", "megasnow")
    eager = get("linear_cross_entropy", "fwdbwd", "torch_eager")
    both = ours and eager and ours["status"] == eager["status"] == "ok"
    check = f"fused linear+CE peak memory vs unfused ({tokens} tokens)"
    if both and _num(ours["peak_extra_mib"]) is not None and _num(eager["peak_extra_mib"]) is not None:
        a, b = float(ours["peak_extra_mib"]), float(eager["peak_extra_mib"])
        R.add("2.lce_memory", 2, check, f"{a:.0f} MiB vs {b:.0f} MiB ({a / b:.2f} of unfused)", "<= 1/4 of unfused",
              R.verdict(a <= b / 4))
    else:
        R.add("2.lce_memory", 2, check, "-", "<= 1/4 of unfused", DRY if not R.gpu and both else ERROR,
              "peak memory is measured on CUDA only" if not R.gpu and both else why(ours if not ours or
                                                                                    ours["status"] != "ok" else eager))
    check = f"fused linear+CE fwd+bwd time vs unfused ({tokens} tokens)"
    if both:
        a, b = float(ours["median_ms"]), float(eager["median_ms"])
        R.add("2.lce_speed", 2, check, f"{a:.2f} ms vs {b:.2f} ms ({a / b:.2f}x)", "within 10% of unfused",
              R.verdict(a <= 1.1 * b))
    else:
        R.add("2.lce_speed", 2, check, "-", "within 10% of unfused", ERROR,
              why(ours if not ours or ours["status"] != "ok" else eager))
    compiled = [r for r in rows if r["provider"] == "torch_compile"]
    errors = [r for r in rows if r["status"] == "error"]
    fig = (f"{sum(r['status'] == 'ok' for r in rows)} measured, {len(errors)} errors, "
           f"{sum(r['status'] == 'skipped' for r in rows)} skipped; torch.compile "
           f"{sum(r['status'] == 'ok' for r in compiled)}/{len(compiled)} ok")
    note = "; ".join(f"{r['op']} {r['mode']} {r['provider']}: {r['note'][:80]}" for r in errors[:3])
    R.add("2.all", 2, "all kernel benchmark rows (CSV: kernels.csv, plot: kernels.png)", fig, "-",
          ERROR if errors else INFO, note)


def train_rows(R, res):
    tt = _load_json(os.path.join(res, "train_throughput.json"))
    rows = (tt or {}).get("rows", [])
    ours = next((r for r in rows if r["impl"] == "megasnow" and r.get("tokens_per_s")), None)
    hf = next((r for r in rows if r["impl"] == "hf-sdpa" and r.get("tokens_per_s")), None)
    if ours is None:
        note = next((r.get("note") for r in rows if r["impl"] == "megasnow"), None)
        status, why = (ERROR, note) if note else R.missing("train")
        R.add("3.mfu", 3, "megasnow training MFU", "-", ">= 45%", status, why)
        R.add("3.vs_hf", 3, "megasnow tokens/s vs HF LlamaForCausalLM + SDPA", "-", ">= 1.3x", status, why)
    else:
        fig = (f"{ours['mfu']:.1%} ({ours['tokens_per_s']:,.0f} tok/s, {ours['tflops']:.0f} TFLOP/s, micro-batch "
               f"{ours['micro_batch']} x seq {ours['seq']}, peak {ours['peak_mem_gib'] or 0:.0f} GiB)"
               if ours.get("mfu") is not None else f"n/a on CPU ({ours['tokens_per_s']:,.0f} tok/s)")
        R.add("3.mfu", 3, f"megasnow training MFU ({(tt or {}).get('header', '').split(';')[0]})", fig, ">= 45%",
              R.verdict((ours.get("mfu") or 0) >= 0.45), "MFU: model FLOPs (Megatron's count) / dense bf16 peak")
        if hf:
            ratio = ours["tokens_per_s"] / hf["tokens_per_s"]
            fig = f"{ratio:.2f}x ({ours['tokens_per_s']:,.0f} vs {hf['tokens_per_s']:,.0f} tok/s)"
            R.add("3.vs_hf", 3, "megasnow tokens/s vs HF LlamaForCausalLM + SDPA, same shapes", fig, ">= 1.3x",
                  R.verdict(ratio >= 1.3))
        else:
            note = next((r.get("note") for r in rows if r["impl"] == "hf-sdpa"), "HF SDPA row missing")
            R.add("3.vs_hf", 3, "megasnow tokens/s vs HF LlamaForCausalLM + SDPA", "-", ">= 1.3x", ERROR, note)
    for impl, rid, check in (("hf-sdpa-liger", "3.hf_liger", "HF + SDPA + Liger-Kernel tokens/s"),
                             ("megasnow.train", "3.trainer", "python -m megasnow.train tokens/s and MFU")):
        r = next((x for x in rows if x["impl"].startswith(impl)), None)
        no_liger = impl == "hf-sdpa-liger" and not_carried(R.res, "liger_kernel", "liger-kernel")
        if no_liger and not (r and r.get("tokens_per_s")) and tt is not None:
            R.add(rid, 3, check, "-", "-", NOT_RUN, no_liger)
        elif r and r.get("tokens_per_s"):
            mfu = f", MFU {r['mfu']:.1%}" if r.get("mfu") is not None else ""
            R.add(rid, 3, check, f"{r['tokens_per_s']:,.0f} tok/s{mfu} (micro-batch {r.get('micro_batch')})", "-", INFO)
        elif r:
            R.add(rid, 3, check, "-", "-", INFO if "skipped" in (r.get("note") or "") else ERROR, r.get("note", ""))
        else:
            R.absent(rid, 3, check, "-", "train")


def annotator_rows(R, res):
    rows = _load_csv(os.path.join(res, "annotate.csv"))
    check, target = "annotator scoring files/s vs the plain HF loop", ">= 3x"
    ours = next((r for r in rows or [] if r["method"].startswith("megasnow")), None)
    if ours is None:
        R.absent("4.annotator", 4, check, target, "annotator")
        return
    base = next(r for r in rows if r["method"] == "hf_per_file")
    sp, diff = float(ours["speedup_wall"]), float(ours["max_abs_score_diff"])
    fig = (f"{sp:.2f}x ({float(ours['files_per_s_wall']):.1f} vs {float(base['files_per_s_wall']):.1f} files/s; "
           f"per repeat {float(ours['speedup_min']):.2f}-{float(ours['speedup_max']):.2f}x)")
    note = "random encoder weights (same architecture and FLOPs); max |score diff| %.1e" % diff
    R.add("4.annotator", 4, check, fig, target, R.verdict(sp >= 3 and diff < 0.05), note)


def serve_rows(R, res):
    check = "megasnow.serve aggregate tokens/s at 1 and 32 concurrent requests"
    found = None
    for name in ("serve.json", "serve_throughput.json"):
        found = found or _load_json(os.path.join(res, name))
    for name in ("serve.csv", "serve_throughput.csv"):
        found = found or _load_csv(os.path.join(res, name))
    if found is None:
        status, why = R.missing("serve")
        R.add("5.serve", 5, check, "-", "-", status, why)
        return
    rows = found.get("rows", found.get("results", found)) if isinstance(found, dict) else found
    figs = []
    for r in rows if isinstance(rows, list) else []:
        c = r.get("concurrency")
        tps = next((r[k] for k in ("tokens_per_s_median", "aggregate_tokens_per_s", "output_tokens_per_s", "tokens_per_s") if k in r), None)
        if c is not None and tps is not None:
            figs.append(f"{c}: {float(tps):,.0f} tok/s")
    R.add("5.serve", 5, check, "; ".join(figs) or "-", "-", INFO if figs else ERROR,
          "" if figs else "serve output has no rows with concurrency and tokens/s")


def cpu_rows(R, res):
    cs = _load_json(os.path.join(res, "cpu_scaling.json"))
    if cs is None:
        R.absent("6.binarize", 6, "binarization vs the single-thread SentencePiece limit", ">= 0.9 x workers x limit",
                 "cpu-scaling")
        R.absent("6.megatron", 6, "binarization vs Megatron-LM's tools/preprocess_data.py", TARGET_MEGATRON,
                 "cpu-scaling")
        R.absent("6.minhash", 6, "MinHash signature stage, threads", "-", "cpu-scaling")
        return
    limit = cs["limit_mb_s"]
    for r in cs["binarize"]:
        if r["tool"] != "megasnow":
            continue
        workers = f"{r['workers']} worker" + ("s" if r["workers"] > 1 else "")
        R.add(f"6.binarize.{r['workers']}", 6, f"binarization, {workers} ({cs['cores']} cores)",
              f"{r['vs_limit']:.2f} x workers x limit ({r['text_mb_s']:.1f} MB/s; limit {limit:.2f} MB/s per thread)",
              ">= 0.9", R.verdict(r["vs_limit"] >= 0.9), f"CPU {r['cpu_s']}s, peak RSS {r.get('peak_rss_mb')} MB")
    meg = [r for r in cs["binarize"] if r["tool"] == "megatron-lm"]
    if not meg:
        s = _load_json(os.path.join(res, "setup.json")) or {}
        R.add("6.megatron", 6, "binarization vs Megatron-LM's tools/preprocess_data.py", "-", TARGET_MEGATRON,
              NOT_RUN, f"Megatron-LM source not carried: no megatron-lm-*.tar.gz in {s.get('wheels_dir', '.whl/')} "
              "(scripts/prepare_gpu_wheels.sh)")
    for r in meg:
        check = f"binarization vs Megatron-LM's tools/preprocess_data.py, {r['workers']} workers"
        if "error" in r:
            R.add("6.megatron", 6, check, "-", TARGET_MEGATRON, ERROR, r["error"][-300:])
            continue
        same = r.get("identical_output")
        fig = f"megasnow {r['megasnow_speedup']:.2f}x ({r['text_mb_s']:.1f} MB/s for Megatron, its imports included)"
        R.add("6.megatron", 6, check, fig, TARGET_MEGATRON,
              R.verdict((r["megasnow_speedup"] or 0) > 1 and bool(same)),
              f".bin/.idx byte-identical: {same} (same flags: {r.get('tokenizer_type', 'GPTSentencePieceTokenizer')}, "
              "--append-eod: both append the model's eos </s>)")
    mh = cs.get("minhash", [])
    fig = ", ".join(f"{r['threads']}: {r['speedup']:.2f}x" for r in mh)
    R.add("6.minhash", 6, f"MinHash signatures, speedup over 1 thread ({cs['cores']} cores)", fig or "-", "-",
          INFO if mh else ERROR, f"1 thread {mh[0]['mb_s']:.1f} MB/s" if mh else "no MinHash rows")


def header(env, tasks, deadline_s, elapsed_s, gpu):
    env = env or {}
    dev, smi, v = env.get("device", {}), env.get("nvidia_smi", {}), env.get("versions", {})
    return {
        "mode": "GPU" if gpu else "CPU dry run (no figure is a GPU result; statuses are CPU-DRY-RUN)",
        "date": env.get("time", "?"), "device": dev.get("name", "unknown"),
        "capability": dev.get("capability"), "gpu_memory_gib": dev.get("memory_gib"),
        "driver": smi.get("driver_version"), "cuda (torch)": env.get("torch_cuda"),
        "torch": v.get("torch"), "triton": v.get("triton"), "transformers": v.get("transformers"),
        "liger-kernel": v.get("liger_kernel"), "flash-attn": v.get("flash_attn"), "python": env.get("python"),
        "cpu": f"{env.get('cpu', {}).get('model')} x {env.get('cpu', {}).get('cores')}",
        "ceilings": env.get("ceilings"), "commit": env.get("git_commit"),
        "elapsed_s": round(elapsed_s, 1), "deadline_s": deadline_s,
        "tasks": {n: {k: t.get(k) for k in ("status", "seconds", "cap_s")} for n, t in tasks.items()},
    }


def build(results_dir, tasks, dry_run, deadline_s=None, elapsed_s=0.0):
    """(header dict, rows) from the results folder and the runner's task records {name: record}."""
    env = _load_json(os.path.join(results_dir, "env.json"))
    gpu = (not dry_run) and bool(env and env.get("cuda_available")) and env.get("mode") == "gpu"
    R = Rows(tasks, gpu, results_dir)
    for part in (setup_rows, correctness_rows, kernel_rows, train_rows, annotator_rows, serve_rows, cpu_rows):
        try:
            part(R, results_dir)
        except Exception as e:  # an unexpected output shape must not lose the other rows
            R.add(f"{part.__name__}", -1, f"summary of {part.__name__}", "-", "-", ERROR,
                  f"could not read the outputs: {type(e).__name__}: {e}"[:300])
    return header(env, tasks, deadline_s, elapsed_s, gpu), R.rows


def to_markdown(head, rows):
    ceil = head.get("ceilings") or {}
    device = f"- device: **{head['device']}**"
    if head["capability"]:
        device += (f" (capability {head['capability']}, {head['gpu_memory_gib']} GiB), driver {head['driver']}, "
                   f"CUDA {head['cuda (torch)']}")
    lines = [f"# GPU suite summary ({head['mode']})", "", device,
             f"- torch {head['torch']}, triton {head['triton']}, transformers {head['transformers']}, liger-kernel "
             f"{head['liger-kernel']}, flash-attn {head['flash-attn']}, python {head['python']}",
             f"- CPU: {head['cpu']}; commit {head['commit']}; {head['date']}",
             f"- measured ceilings: copy {ceil.get('copy_gb_s', '-')} GB/s, bf16 matmul "
             f"{ceil.get('matmul_bf16_tflops', '-')} TFLOP/s" if ceil else "- measured ceilings: n/a",
             f"- elapsed {head['elapsed_s']:.0f}s of the {head['deadline_s']}s deadline; task times: "
             + ", ".join(f"{n} {t['seconds']:.0f}s ({t['status']})" for n, t in head["tasks"].items()
                         if t.get("seconds") is not None), "",
             "| step | check | figure | target | status | note |", "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [str(r["step"]), r["check"], r["figure"], r["target"], f"**{r['status']}**", r["note"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    lines += ["", "rows: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v)]
    return "\n".join(lines) + "\n"


def to_csv(rows):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
