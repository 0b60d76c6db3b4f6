"""The GPU suite's summary judges each figure against its target (PASS/MISS on a GPU run), says ERROR with the
reason when a task failed or timed out, and never reports a PASS from a run without a GPU."""
import csv
import json

import pytest

from benchmarks.gpu import summary
from tools.bench_kernels import CSV_COLUMNS


def kernel_row(op, mode, provider, ms, pct="", mem="", status="ok", tokens=32768, shape="x", note=""):
    return dict(op=op, mode=mode, provider=provider, tokens=tokens, shape=shape, dtype="bf16", device="NVIDIA H200",
                status=status, median_ms=ms, metric="GB/s", value="1000", pct_copy_bw=pct, peak_extra_mib=mem,
                note=note)


@pytest.fixture
def gpu_results(tmp_path):
    """A results folder as a GPU run writes it, with figures on both sides of every target."""
    r = tmp_path
    (r / "env.json").write_text(json.dumps({"mode": "gpu", "cuda_available": True, "device": {"name": "NVIDIA H200"},
                                            "versions": {"torch": "2.11.0"}}))
    (r / "build.json").write_text(json.dumps({"method": "setup.py build_ext --inplace", "seconds": 14.2, "ok": True}))
    (r / "kernel_tests.xml").write_text(
        '<testsuites><testsuite tests="10" failures="1" errors="0" skipped="1">'
        '<testcase classname="tests.kernels.test_rope_kernel" name="test_a"><failure message="x"/></testcase>'
        '</testsuite></testsuites>')
    tol = {"logits": 1e-4, "loss": 1e-5, "grad": 1e-4}
    (r / "model_check.json").write_text(json.dumps({"results": [
        {"preset": "snowcoder-1.3b", "layers": 2, "dtype": "fp32", "logits_rel_err": 1e-6, "loss_rel_err": 1e-7,
         "grad_max_rel_err": 2e-6, "grad_worst_param": "embed.weight", "tolerances": tol, "ok": True},
        {"preset": "snowcoder-1.3b", "layers": 2, "dtype": "bf16", "ok": False, "error": "CompilationError: boom"}]}))
    (r / "precision.json").write_text(json.dumps({"max_rel_diff": 0.05, "worst_step": 40, "mean_rel_diff": 0.01,
                                                  "loss_fp32": [10.4, 6.0], "steps": 60, "tolerance": 0.03,
                                                  "min_drop": 0.2, "ok": False, "model": "m"}))
    rows = [kernel_row("rms_norm", "fwd", "megasnow", "0.1", pct="91.0"),
            kernel_row("rms_norm", "bwd", "megasnow", "0.2", pct="80.0"),
            kernel_row("rms_norm", "fwd", "megasnow", "0.1", pct="10.0", tokens=8192),  # smaller size: not read
            kernel_row("cross_entropy", "fwdbwd", "megasnow", "2.0", mem="4000", shape="logits[32768,64000]"),
            kernel_row("cross_entropy", "fwdbwd", "liger", "2.5"),
            kernel_row("linear_cross_entropy", "fwdbwd", "megasnow", "50", mem="1000"),
            kernel_row("linear_cross_entropy", "fwdbwd", "torch_eager", "40", mem="20000"),
            kernel_row("swiglu", "fwd", "torch_compile", "", status="error", note="InductorError: x")]
    with open(r / "kernels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    (r / "train_throughput.json").write_text(json.dumps({"header": "device: NVIDIA H200; ...", "rows": [
        {"impl": "megasnow", "seq": 8192, "micro_batch": 2, "tokens_per_s": 40000, "tflops": 520, "mfu": 0.526,
         "peak_mem_gib": 60},
        {"impl": "hf-sdpa", "seq": 8192, "micro_batch": 1, "tokens_per_s": 32000, "tflops": 416, "mfu": 0.42},
        {"impl": "hf-sdpa-liger", "seq": 8192, "note": "failed: exit 1"}]}))
    (r / "annotate.csv").write_text("mix,method,files_per_s_wall,files_per_s_min,files_per_s_max,speedup_wall,"
                                    "speedup_min,speedup_max,files_per_cpu_s,speedup_cpu,max_abs_score_diff\n"
                                    "files,hf_per_file,100,99,101,1,1,1,50,1,0\n"
                                    "files,megasnow,350,340,360,3.5,3.4,3.6,150,3,1e-3\n")
    (r / "cpu_scaling.json").write_text(json.dumps({"cores": 16, "limit_mb_s": 4.0, "binarize": [
        {"tool": "megasnow", "workers": 1, "vs_limit": 1.01, "text_mb_s": 4.04, "cpu_s": 8},
        {"tool": "megasnow", "workers": 16, "vs_limit": 0.85, "text_mb_s": 54.4, "cpu_s": 9},
        {"tool": "megatron-lm", "workers": 16, "megasnow_speedup": 1.6, "text_mb_s": 34.0,
         "tokenizer_type": "GPTSentencePieceTokenizer", "identical_output": True}],
        "minhash": [{"threads": 1, "speedup": 1.0, "mb_s": 30.0}, {"threads": 16, "speedup": 14.1, "mb_s": 423}]}))
    tasks = {"build": {"status": "ok"}, "train": {"status": "ok"},
             "serve": {"status": "timeout", "seconds": 90.0, "rc": None}}
    return r, tasks


def by_id(rows):
    return {r["id"]: r for r in rows}


def test_gpu_run_rows_are_judged_against_their_targets(gpu_results):
    results, tasks = gpu_results
    head, rows = summary.build(str(results), tasks, dry_run=False)
    s = by_id(rows)
    assert head["device"] == "NVIDIA H200"
    assert s["0.build"]["status"] == "PASS"
    assert s["1.kernel_tests"]["status"] == "MISS" and "test_rope_kernel::test_a" in s["1.kernel_tests"]["note"]
    assert s["1.kernel_tests"]["figure"] == "8 passed, 1 failed, 0 errors, 1 skipped"
    assert s["1.model.snowcoder-1.3b.fp32"]["status"] == "PASS"
    bf16 = s["1.model.snowcoder-1.3b.bf16"]
    assert bf16["status"] == "ERROR" and "CompilationError" in bf16["note"]
    assert s["1.precision"]["status"] == "MISS"
    assert s["2.rms_norm.fwd"]["status"] == "PASS" and s["2.rms_norm.fwd"]["figure"].startswith("91.0%")
    assert s["2.rms_norm.bwd"]["status"] == "MISS"
    assert s["2.swiglu.fwd"]["status"] == "ERROR"  # no megasnow row at all
    assert s["2.ce_vs_liger"]["status"] == "PASS" and "(1.25x)" in s["2.ce_vs_liger"]["figure"]
    assert s["2.ce_memory"]["status"] == "PASS"  # 4000 MiB <= 32768 x 64000 x 2 B = 4000 MiB
    assert s["2.lce_memory"]["status"] == "PASS"  # 1000 <= 20000 / 4
    assert s["2.lce_speed"]["status"] == "MISS"  # 50 ms > 1.1 x 40 ms
    assert s["2.all"]["status"] == "ERROR" and "InductorError" in s["2.all"]["note"]
    assert s["3.mfu"]["status"] == "PASS" and s["3.mfu"]["figure"].startswith("52.6%")
    assert s["3.vs_hf"]["status"] == "MISS" and s["3.vs_hf"]["figure"].startswith("1.25x")
    assert s["3.hf_liger"]["status"] == "ERROR"  # failed: its note says so
    assert s["3.trainer"]["status"] == "ERROR" and "no figure" in s["3.trainer"]["note"]  # task ok, row missing
    assert s["4.annotator"]["status"] == "PASS"
    assert s["5.serve"]["status"] == "ERROR" and "timed out after 90s" in s["5.serve"]["note"]
    assert s["6.binarize.1"]["status"] == "PASS" and s["6.binarize.16"]["status"] == "MISS"
    assert s["6.megatron"]["status"] == "PASS" and s["6.minhash"]["status"] == "INFO"
    assert set(r["status"] for r in rows) <= set(summary.STATUSES)


def test_no_pass_without_a_gpu(gpu_results):
    results, tasks = gpu_results
    for dry_run, env in ((True, None), (False, {"mode": "gpu", "cuda_available": False})):
        if env:
            (results / "env.json").write_text(json.dumps(env))
        _, rows = summary.build(str(results), tasks, dry_run=dry_run)
        statuses = {r["status"] for r in rows}
        assert "PASS" not in statuses and "MISS" not in statuses
        assert by_id(rows)["2.rms_norm.fwd"]["status"] == "CPU-DRY-RUN"
        assert by_id(rows)["5.serve"]["status"] == "ERROR"  # errors stay errors


def test_missing_outputs_say_why(tmp_path):
    tasks = {"kernels": {"status": "failed", "rc": 1, "seconds": 3.0}, "train": {"status": "not-run",
             "note": "the suite's 540s deadline came first"}, "serve": {"status": "not-built", "note": "no script"}}
    _, rows = summary.build(str(tmp_path), tasks, dry_run=False)
    s = by_id(rows)
    assert s["2.rms_norm.fwd"]["status"] == "ERROR" and "exit status 1" in s["2.rms_norm.fwd"]["note"]
    assert s["3.mfu"]["status"] == "NOT RUN" and "deadline" in s["3.mfu"]["note"]
    assert s["5.serve"]["status"] == "not built"
    md = summary.to_markdown(summary.header(None, tasks, 540, 1.0, False), rows)
    assert md.count("\n| ") == len(rows) + 1  # header row + one line per row


def test_wheels_not_carried_are_not_run_with_the_reason(gpu_results):
    """A GPU run without liger-kernel, the serving wheels and the Megatron-LM archive in .whl/: those rows say NOT RUN
    and which wheel is missing, never ERROR (the runner marks the serve task not-run before starting it)."""
    results, tasks = gpu_results
    (results / "setup.json").write_text(json.dumps({"wheels": [], "wheels_dir": "/repo/.whl", "carried": [],
                                                    "notes": []}))
    rows = [kernel_row("cross_entropy", "fwdbwd", "megasnow", "2.0", mem="4000", shape="logits[32768,64000]"),
            kernel_row("cross_entropy", "fwdbwd", "liger", "", status="skipped", note="Liger-Kernel not installed")]
    with open(results / "kernels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    train = json.loads((results / "train_throughput.json").read_text())
    train["rows"][-1] = {"impl": "hf-sdpa-liger", "seq": 8192, "note": "skipped: liger-kernel not installed"}
    (results / "train_throughput.json").write_text(json.dumps(train))
    cs = json.loads((results / "cpu_scaling.json").read_text())
    cs["binarize"] = [r for r in cs["binarize"] if r["tool"] != "megatron-lm"]
    (results / "cpu_scaling.json").write_text(json.dumps(cs))
    tasks["serve"] = {"status": "not-run", "note": "wheels not in /repo/.whl: fastapi, openai, uvicorn (...)"}
    s = by_id(summary.build(str(results), tasks, dry_run=False)[1])
    for rid in ("2.ce_vs_liger", "3.hf_liger"):
        assert s[rid]["status"] == "NOT RUN", s[rid]
        assert s[rid]["note"] == "liger-kernel not carried: no liger-kernel wheel in /repo/.whl " \
                                 "(scripts/prepare_gpu_wheels.sh)"
    assert s["2.ce_vs_liger"]["figure"] == "megasnow 2.000 ms"
    assert s["5.serve"]["status"] == "NOT RUN" and s["5.serve"]["note"].startswith("wheels not in /repo/.whl: fastapi")
    assert s["6.megatron"]["status"] == "NOT RUN" and "no megatron-lm-*.tar.gz in /repo/.whl" in s["6.megatron"]["note"]
