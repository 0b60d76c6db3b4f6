"""tools/bench_kernels.py runs on CPU (even where a GPU is present) at the smallest size and writes the expected
CSV rows and a PNG."""

import csv
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OPS = {"rms_norm", "swiglu", "rope", "cross_entropy", "linear_cross_entropy", "attention"}
MODES = {"fwd", "bwd", "fwdbwd"}
PROVIDERS = {"megasnow", "torch_eager", "torch_compile", "liger"}
COLUMNS = ["op", "mode", "provider", "tokens", "shape", "dtype", "device", "status", "median_ms", "metric", "value",
           "pct_copy_bw", "peak_extra_mib", "note"]


def test_bench_kernels_quick_cpu_run_writes_csv_and_plot(tmp_path):
    prefix = tmp_path / "kernels"
    res = subprocess.run(
        [sys.executable, str(REPO / "tools" / "bench_kernels.py"), "--quick", "--tokens", "4", "--reps", "1",
         "--device", "cpu", "--out", str(prefix)],
        capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "running on CPU" in res.stderr

    with open(prefix.with_suffix(".csv"), newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    assert {(r["op"], r["mode"], r["provider"]) for r in rows} == {(o, m, p) for o in OPS for m in MODES for p in PROVIDERS}
    assert len(rows) == len(OPS) * len(MODES) * len(PROVIDERS)
    for r in rows:
        assert r["tokens"] == "4" and r["dtype"] == "bf16" and r["device"].startswith("cpu (")
        if r["provider"] in ("megasnow", "torch_eager"):  # measured on CPU
            assert r["status"] == "ok", r
            assert float(r["median_ms"]) > 0 and float(r["value"]) > 0
            assert r["metric"] == ("TFLOP/s" if r["op"] in ("linear_cross_entropy", "attention") else "GB/s")
            if r["metric"] == "GB/s":
                assert float(r["pct_copy_bw"]) >= 0
        else:  # no CUDA: Liger and (by default) torch.compile are skipped with a reason
            assert r["status"] == "skipped" and r["note"], r
    assert prefix.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
