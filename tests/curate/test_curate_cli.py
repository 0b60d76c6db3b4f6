"""tools/curate.py answers every mistake in one `error:` line (exit 2) and leaves nothing behind; empty input is a
warning (an error with --strict); a failing task names its shard and the file it was reading; long tasks print
counts and rates; Ctrl-C exits 130 with one line; the run ends with a summary that points only at what exists."""
import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from megasnow.config import load_config
from megasnow.curate.config import CurateConfig
from megasnow.curate.executors import shutdown_executors
from megasnow.curate.pipeline import CurationTaskError, run_pipeline
from megasnow.curate.summary import format_rate
from tests.curate.corpus import copy_stdlib_repos, stdlib_file, write_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "curate.py")
# a tqdm bar ("3/10 [00:01<00:02, ...") or megasnow's progress line off a terminal ("prepare (3/3 to run): 0/3 tasks
# (0%)", "...: done 3 tasks in 2 s (1.50 tasks/s)")
PROGRESS = re.compile(r"\d+/\d+ \[[\d:<?]+|: [\d,]+/[\d,]+ \w+ \(\d+%\)|: done [\d,]+ \w+ in ")


def curate(*args, timeout=120):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, TOOL, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def error_line(proc):
    """The one line a failed run prints (stderr holds nothing else but progress bars)."""
    lines = [line for line in proc.stderr.replace("\r", "\n").splitlines()
             if line.strip() and not PROGRESS.search(line)]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (proc.returncode, proc.stderr)
    return lines[0]


def records(n=3):
    rels = ["csv.py", "shlex.py", "glob.py", "textwrap.py", "fnmatch.py"][:n]
    return [{"content": stdlib_file(r), "max_stars_repo_name": "o/" + r, "max_stars_repo_path": r, "lang": "Python"}
            for r in rels]


def test_mistakes_at_start_are_one_line_and_create_nothing(tmp_path):
    out = tmp_path / "out"
    line = error_line(curate("--input", str(tmp_path / "MISSING"), "--output", str(out)))
    assert "MISSING" in line and "does not exist" in line
    assert not out.exists()
    out.mkdir()  # an existing (empty) output folder stays empty
    error_line(curate("--input", str(tmp_path / "MISSING"), "--output", str(out)))
    assert os.listdir(out) == []
    good = write_jsonl(str(tmp_path / "in.jsonl"), records(1))
    line = error_line(curate("--input", good, "--output", str(out), "decontamination.benchmarks=[nope.jsonl]"))
    assert "decontamination.benchmarks" in line and "nope.jsonl" in line
    line = error_line(curate("--input", good, "--output", str(out), "near_dedup.treshold=0.8"))
    assert "treshold" in line
    line = error_line(curate("--input", good, "--output", str(out), "--config", str(tmp_path / "nope.yaml")))
    assert "nope.yaml" in line
    assert os.listdir(out) == []


def test_empty_input_is_a_warning_or_with_strict_an_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    line = error_line(curate("--input", str(empty), "--output", str(out), "--strict"))
    assert str(empty) in line and not out.exists()
    (tmp_path / "blank.jsonl").write_text("")  # a shard without records: known only once read
    line = error_line(curate("--input", str(tmp_path / "blank.jsonl"), "--output", str(out), "--strict"))
    assert "blank.jsonl" in line and not out.exists()
    proc = curate("--input", str(empty), "--output", str(out))
    assert proc.returncode == 0 and "warning: no source files found in " + str(empty) in proc.stderr
    assert "no documents were written" in proc.stdout
    for path in re.findall(re.escape(str(out)) + r"[^\s;,()]*", proc.stdout):  # it points only at what exists
        assert os.path.exists(path), path


def test_other_config_on_the_same_output_is_one_line(tmp_path):
    good = write_jsonl(str(tmp_path / "in.jsonl"), records(2))
    out = str(tmp_path / "out")
    assert curate("--input", good, "--output", out).returncode == 0
    line = error_line(curate("--input", good, "--output", out, "near_dedup.threshold=0.8"))
    assert "different config" in line and out in line
    again = curate("--input", good, "--output", out)
    assert again.returncode == 0 and "nothing left to do" in again.stdout


def test_progress_lines_and_summary(tmp_path):
    repos = tmp_path / "repos"
    for name, rels in (("a", ("csv.py", "glob.py")), ("b", ("shlex.py", "textwrap.py"))):
        (repos / name).mkdir(parents=True)
        for rel in rels:
            (repos / name / rel).write_text(stdlib_file(rel))
    out = str(tmp_path / "out")
    proc = curate("--input", str(repos), "--output", out, "progress_interval_s=0", "source.repo_shard_bytes=1")
    assert proc.returncode == 0, proc.stderr
    beats = re.findall(r"prepare shard (\d+): (\d+) files, ([\d.]+ [kM]?B) in [\d.]+ s \(([^)]*)\) \(reading (.*)\)",
                       proc.stderr)
    assert [(s, n) for s, n, *_ in beats] == [("00000", "1"), ("00000", "2"), ("00001", "1"), ("00001", "2")]
    assert all(" 0 " not in rate and re.search(r"files/(s|min)", rate) for *_, rate, _ in beats)
    assert beats[0][4] == os.path.join(str(repos), "a", "csv.py")
    summary = proc.stdout.strip().splitlines()
    assert re.match(r"curated 4 files \([\d.]+ kB\) from 1 input\(s\) in [\d.]+ s \([\d.,]+ files/(s|min), "
                    r"[\d.]+ [kM]?B/s\): 4 files kept in 2 documents", summary[-3]), summary[-3]
    assert summary[-1] == f"documents: {out}/documents (1 file); report: {out}/stats.json"
    assert os.path.isdir(os.path.join(out, "documents"))


def test_rates_never_round_to_zero():
    assert format_rate(60, 124, "docs") == "29 docs/min"
    assert format_rate(1, 600, "docs") == "10 min/doc"
    assert format_rate(25512, 25.7, "files") == "993 files/s"
    assert format_rate(3, 2, "files") == "1.5 files/s"
    assert format_rate(220e6, 16.5, "", as_bytes=True) == "13.3 MB/s"


def blocked_run(tmp_path, n_shards=3):
    """Inputs whose shard 00001 cannot be written: its prepared output name is taken by a folder, as a full or
    read-only disk would fail a task (a real OSError, raised inside whichever worker runs it)."""
    inputs = [write_jsonl(str(tmp_path / f"s{i}.jsonl"), records(i + 2)) for i in range(n_shards)]
    out = tmp_path / "out"
    os.makedirs(out / "work" / "prepared" / "00001.jsonl")
    return inputs, str(out)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_task_names_its_shard_and_file_locally(tmp_path, workers):
    inputs, out = blocked_run(tmp_path)
    cfg = load_config(CurateConfig, overrides=[f"workers={workers}"])
    try:
        with pytest.raises(CurationTaskError) as err:
            run_pipeline(inputs, out, cfg)
    finally:
        shutdown_executors()
    msg = str(err.value)
    assert f"prepare_shard of shard 00001 ({inputs[1]}) failed while reading {inputs[1]} (line 3): " \
           "IsADirectoryError" in msg, msg


def test_a_failing_task_is_one_line_from_the_tool(tmp_path):
    inputs, out = blocked_run(tmp_path)
    line = error_line(curate("--input", *inputs, "--output", out))
    assert "shard 00001" in line and inputs[1] in line and "IsADirectoryError" in line


def test_ctrl_c_exits_130_with_one_line(tmp_path):
    repos = copy_stdlib_repos(str(tmp_path / "repos"), ["json", "email", "logging", "xml", "http", "urllib",
                                                        "concurrent", "importlib", "wsgiref", "html"])
    out = str(tmp_path / "out")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, TOOL, "--input", repos, "--output", out, "--workers", "2",
                             "source.repo_shard_bytes=1"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    markers = os.path.join(out, "work", "done", "prepare")
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not glob.glob(os.path.join(markers, "*.json")):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends: the whole foreground process group
        t0 = time.time()
        _, stderr = proc.communicate(timeout=60)
    finally:  # a failed wait leaves no tool or pool worker running
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130 and time.time() - t0 < 30
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip() and not PROGRESS.search(line)]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert len(lines) == 1 and "interrupted (Ctrl-C)" in lines[0], lines
