"""The quickstart in its reduced CI setting: curation -> tokenizer -> binarization -> three phases -> samples + PNG."""
import json
import os
import subprocess
import sys

from tests.train.helpers import REPO, train_env


def test_quickstart_ci(tmp_path):
    work = tmp_path / "qs"
    env = train_env()
    env["OMP_NUM_THREADS"] = "2"
    env.pop("TRITON_INTERPRET", None)  # as a user runs it: reference kernels on CPU, not Triton's interpreter
    res = subprocess.run([sys.executable, os.path.join(REPO, "examples", "quickstart.py"), "--ci", "--workdir",
                          str(work)], capture_output=True, text=True, timeout=900, env=env, cwd=REPO)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # curation ran (tools/curate.py landed) and wrote its report
    assert (work / "curated" / "stats.json").exists()
    recs = [json.loads(l) for l in (work / "log" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r.get("kind", "train") == "train"]
    assert [r["phase"] for r in train].count("phase1-general") == 40
    assert {r["phase"] for r in train} == {"phase1-general", "phase2-quality", "phase3-synthetic-standin"}
    first = sum(r["loss"] for r in train[:5]) / 5
    last = sum(r["loss"] for r in train[-5:]) / 5
    assert last < first - 0.5, (first, last)  # the loss visibly falls
    assert any(r.get("kind") == "eval" for r in recs)
    png = (work / "loss_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    samples = [json.loads(l) for l in (work / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and all(len(s["tokens"]) > 0 for s in samples)
    assert "loss " in res.stdout and "loss curve:" in res.stdout
