"""A curation run killed mid-stage (SIGKILL of the CLI process) resumes to exactly the result of an unbroken run."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

from megasnow.config import load_config
from megasnow.curate.config import CurateConfig
from megasnow.curate.pipeline import run_pipeline
from tests.curate.corpus import copy_stdlib_repos

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ["json", "email", "logging", "xml", "http", "urllib", "concurrent", "importlib", "wsgiref", "html",
            "sqlite3", "dbm", "tomllib", "zoneinfo", "collections", "ctypes"]
OVERRIDES = ["source.repo_shard_bytes=1"]  # one repository per shard: many prepare tasks to kill in between


def output_bytes(out):
    files = sorted(glob.glob(os.path.join(out, "documents", "*.jsonl")))
    files += [os.path.join(out, n) for n in ("duplicates.jsonl", "decontamination.jsonl")]
    return {os.path.relpath(f, out): open(f, "rb").read() for f in files}


def test_killed_run_resumes_to_the_same_result(tmp_path):
    repos = copy_stdlib_repos(str(tmp_path / "repos"), PACKAGES)
    killed = str(tmp_path / "killed")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "curate.py"), "--input", repos, "--output", killed, *OVERRIDES]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    markers = os.path.join(killed, "work", "done", "prepare")
    deadline = time.time() + 60
    while time.time() < deadline and len(glob.glob(os.path.join(markers, "*.json"))) < 2:
        assert proc.poll() is None, "the run finished before it could be killed"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(glob.glob(os.path.join(markers, "*.json")))
    assert 2 <= done_before < len(PACKAGES) and not os.path.exists(os.path.join(killed, "stats.json"))
    # a crash can also leave temporaries behind and a shard whose marker is missing; both must be harmless
    with open(os.path.join(killed, "work", "prepared", ".00003.jsonl.x.tmp"), "w") as f:
        f.write('{"half": ')
    first = sorted(glob.glob(os.path.join(markers, "*.json")))[0]
    os.unlink(first)
    prepared = os.path.join(killed, "work", "prepared", os.path.basename(first)[:-5] + ".jsonl")
    os.truncate(prepared, os.path.getsize(prepared) // 2)  # its output cut in half, as by a non-atomic writer

    cfg = load_config(CurateConfig, overrides=OVERRIDES)
    resumed = run_pipeline([repos], killed, cfg)
    assert resumed["tasks_executed"]["prepare"] == len(PACKAGES) - done_before + 1
    clean = run_pipeline([repos], str(tmp_path / "clean"), cfg)
    assert clean["tasks_executed"]["prepare"] == len(PACKAGES)
    assert output_bytes(killed) == output_bytes(str(tmp_path / "clean"))
    assert resumed["stages"] == clean["stages"] and resumed["bad_input"] == clean["bad_input"]
    assert json.load(open(os.path.join(killed, "stats.json")))["stages"]["documents"]["all"]["files_out"] > 0
