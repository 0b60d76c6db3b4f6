"""`bash benchmarks/gpu_suite.sh --dry-run` runs every step of the GPU suite on the CPU at the smallest sizes, under
the GPU image's import check, and writes the same files and summary format as the GPU run: no row is an ERROR,
none is a PASS, and every check the GPU run reports is there. (No timing is asserted: CI machines differ.)"""
import csv
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from benchmarks.gpu import summary

REPO = Path(__file__).resolve().parents[2]
EXPECTED_IDS = {
    "0.build", "1.kernel_tests", "1.model.tiny-gqa.fp32", "1.model.tiny-gqa.bf16", "1.precision",
    *(f"2.{op}.{mode}" for op in ("rms_norm", "swiglu", "rope") for mode in ("fwd", "bwd")),
    "2.ce_vs_liger", "2.ce_memory", "2.lce_memory", "2.lce_speed", "2.all",
    "3.mfu", "3.vs_hf", "3.hf_liger", "3.trainer", "4.annotator", "5.serve", "6.megatron", "6.minhash",
}


SERVE_WHEELS = ("fastapi", "starlette", "uvicorn", "openai", "jiter", "distro", "sniffio", "pydantic")


def dry_run(tmp_path, wheels):
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    res = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "--dry-run", "--out", str(out), "--work", str(work),
                          "--wheels", str(wheels)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    data = json.loads((out / "summary.json").read_text())
    return out, data, {r["id"]: r for r in data["rows"]}


@pytest.mark.slow
def test_dry_run_writes_the_gpu_suites_outputs(tmp_path):
    """With an empty wheels folder (CI has no .whl/): every step runs except what needs a carried wheel, and those
    rows (serving, Liger-Kernel, Megatron-LM) say NOT RUN and which wheel is missing, as on the GPU machine."""
    out, data, rows = dry_run(tmp_path, tmp_path / "no-wheels")
    assert sorted(os.listdir(out)) == sorted(["suite.log", "summary.md", "summary.csv", "summary.json", "kernels.csv",
                                              "kernels.png", "results.tar.gz"])  # <= 8 files: all come back

    cores = os.cpu_count() or 1
    assert set(rows) == EXPECTED_IDS | {f"6.binarize.{w}" for w in (1, 2) if w <= cores}, sorted(rows)
    not_carried = {"5.serve", "2.ce_vs_liger", "3.hf_liger", "6.megatron"}
    for r in rows.values():
        assert r["status"] in (summary.DRY, summary.INFO, summary.NOT_RUN, summary.NOT_BUILT), r
        assert (r["status"] == summary.NOT_RUN) == (r["id"] in not_carried), r
    wheels = str(tmp_path / "no-wheels")
    assert rows["5.serve"]["note"].startswith(f"wheels not in {wheels}: distro, fastapi, jiter, openai, pydantic")
    for rid in ("2.ce_vs_liger", "3.hf_liger"):
        assert rows[rid]["note"] == f"liger-kernel not carried: no liger-kernel wheel in {wheels} " \
                                    "(scripts/prepare_gpu_wheels.sh)", rows[rid]
    assert f"no megatron-lm-*.tar.gz in {wheels}" in rows["6.megatron"]["note"]
    assert rows["1.kernel_tests"]["figure"].endswith("0 failed, 0 errors, 0 skipped")
    assert data["header"]["mode"].startswith("CPU dry run") and data["header"]["device"].startswith("cpu")

    with open(out / "summary.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == summary.COLUMNS
        assert [r["id"] for r in reader] == [r["id"] for r in data["rows"]]
    md = (out / "summary.md").read_text()
    assert md.startswith("# GPU suite summary (CPU dry run")
    assert "| step | check | figure | target | status | note |" in md
    assert md.count("**CPU-DRY-RUN**") == sum(r["status"] == summary.DRY for r in data["rows"]) > 15

    with tarfile.open(out / "results.tar.gz") as tar:
        names = set(tar.getnames())
    for name in ("env.json", "kernel_tests.xml", "model_check.json", "precision.json", "kernels.csv",
                 "train_throughput.json", "annotate.csv", "cpu_scaling.json", "tasks.json"):
        assert f"results/{name}" in names, name
    log = (out / "suite.log").read_text()
    assert "DRY RUN on CPU" in log and "step 6 CPU scaling > cpu-scaling: done" in log
    assert "step 5 serving throughput > serve: NOT RUN (wheels not in" in log
    assert "[not on the GPU image]" not in log  # nothing our code imports is missing on the GPU machine


@pytest.mark.slow
def test_dry_run_with_the_prepared_wheels(tmp_path):
    """With a prepared .whl/ (scripts/prepare_gpu_wheels.sh; git-ignored, so not in CI): the serving step runs under
    the image check, and Megatron-LM's preprocess_data.py writes the same bytes as megasnow's."""
    wheels = REPO / ".whl"
    names = [n for n in (os.listdir(wheels) if wheels.is_dir() else [])]
    missing = [w for w in SERVE_WHEELS if not any(n.startswith(w + "-") for n in names)]
    if missing or not any(n.startswith("megatron-lm-") for n in names):
        pytest.skip(f"no prepared {wheels} (scripts/prepare_gpu_wheels.sh): missing {missing or 'megatron-lm'}")
    out, data, rows = dry_run(tmp_path, wheels)
    for r in rows.values():
        assert r["status"] in (summary.DRY, summary.INFO, summary.NOT_BUILT), r
    assert rows["5.serve"]["status"] == summary.INFO
    assert rows["5.serve"]["figure"].startswith("1: ") and "; 32: " in rows["5.serve"]["figure"]
    assert rows["6.megatron"]["note"].startswith(".bin/.idx byte-identical: True"), rows["6.megatron"]
    assert "[not on the GPU image]" not in (out / "suite.log").read_text()
