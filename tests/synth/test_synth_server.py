"""Synthesis against real `python -m megasnow.serve` processes on 127.0.0.1 (a tiny random model): injected faults
(500/429/stall) still complete every request exactly once with the retries counted; a SIGKILLed run resumes
without asking a stored request again and ends equal to an uninterrupted run; 401 at once; other 4xx not retried;
several base URLs share the work."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from megasnow.generation.openai_backend import request_body
from megasnow.serve.process import ServerProcess
from megasnow.serve.request_log import request_hash
from tests.synth.conftest import LENIENT, ROOT, TOOL, read_jsonl, run_tool

API_KEY = "synth-test-key"
N_KILL = 40  # requests of the SIGKILL test: enough that the kill lands mid-run
BOUNDED = ["backend.max_retries=8", "backend.backoff_initial=0.05", "backend.backoff_max=0.5"]


@pytest.fixture(scope="module")
def servers(tiny_model, tmp_path_factory):
    """Two servers of the tiny model that want an API key: `faulty` (20% of generation requests answered 500 or
    429, or stalled past the client's deadline) and `clean`; each with a request log."""
    folder = tmp_path_factory.mktemp("servers")
    logs = {name: str(folder / f"{name}.jsonl") for name in ("faulty", "clean")}
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    common = ["--api-key", API_KEY, "--max-num-seqs", "8", "--threads", "1"]
    faulty = ServerProcess(tiny_model, *common, "--request-log", logs["faulty"], "--fault-rate", "0.2",
                           "--fault-seed", "3", "--fault-kinds", "500,429,stall", "--fault-stall-s", "20", env=env)
    clean = ServerProcess(tiny_model, *common, "--request-log", logs["clean"], env=env)
    with faulty, clean:
        yield {"faulty": faulty, "clean": clean, "logs": logs}


def log_lines(path, start=0):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f][start:]


def synth_args(seed_shard, out, url, n, *extra):
    return ["--seeds", seed_shard, "--output", str(out), "--base-url", url, f"seeds.num_seeds={n}",
            "sampling.max_tokens=16", *BOUNDED, *LENIENT, *extra]


def planned_bodies(out, model):
    """{content id: request_hash of the body sent} for every request the run planned (rebuilt like the tool)."""
    from megasnow.config import load_config
    from megasnow.synth.config import SynthConfig
    from megasnow.synth.plan import plan_requests
    from megasnow.synth.seeds import plan_seeds
    from megasnow.synth.templates import load_template

    cfg = load_config(SynthConfig, str(out / "config.yaml"))
    planned = plan_requests(plan_seeds(cfg.seeds).seeds, load_template(cfg.prompt), cfg.sampling, model)
    return {p.id: request_hash(request_body(p.to_generation_request(), model)) for p in planned}


def stored_ids(out):
    ids = []
    for root, _, names in os.walk(out / "responses"):
        for n in sorted(names):
            if n.startswith("chunk-"):
                ids += [r["id"] for r in read_jsonl(os.path.join(root, n))]
    return ids


def test_faults_every_request_completes_once_with_retries_counted(servers, seed_shard, tmp_path):
    out = tmp_path / "out"
    before = len(log_lines(servers["logs"]["faulty"]))
    r = run_tool(*synth_args(seed_shard, out, servers["faulty"].base_url, 24, "backend.timeout=4",
                             "backend.concurrency=6"), env={"OPENAI_API_KEY": API_KEY})
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    (gen,) = summary["generation_this_run"]
    assert (gen["planned"], gen["answered"], gen["failed"]) == (24, 24, {})
    log = [line for line in log_lines(servers["logs"]["faulty"], before) if line["endpoint"] != "/v1/models"]
    faults = [line for line in log if line["fault"]]
    assert faults and {f["fault"] for f in faults} <= {"500", "429", "stall"}
    assert gen["retries"] == len(faults)  # each injected fault cost the client exactly one retry
    ids = stored_ids(out)
    assert len(ids) == len(set(ids)) == 24  # every answer stored once
    docs = read_jsonl(out / "data" / "part-00000.jsonl")
    assert len(docs) == len({d["id"] for d in docs}) == summary["outputs"]["kept"] > 0
    # the answers stored are the ones the server gave: every planned body was answered (200) at least once
    hashes = planned_bodies(out, summary["model"])
    answered = {line["request_hash"] for line in log if line["status"] == 200}
    assert set(hashes.values()) <= answered


def test_sigkill_then_rerun_asks_no_stored_request_again_and_matches(servers, seed_shard, tmp_path):
    url, log_path = servers["clean"].base_url, servers["logs"]["clean"]
    env = {"OPENAI_API_KEY": API_KEY}
    extra = ["output.flush_every=2", "backend.concurrency=2"]
    ref = tmp_path / "uninterrupted"
    assert run_tool(*synth_args(seed_shard, ref, url, N_KILL, *extra), env=env).returncode == 0

    out = tmp_path / "killed"
    start = len(log_lines(log_path))
    proc = subprocess.Popen([sys.executable, TOOL, *synth_args(seed_shard, out, url, N_KILL, *extra)],
                            env={**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while len(stored_ids(out)) < 6 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    first = stored_ids(out)
    assert 6 <= len(first) < N_KILL, "the run was not killed mid-way"
    middle = len(log_lines(log_path))

    r = run_tool(*synth_args(seed_shard, out, url, N_KILL, *extra), env=env)
    assert r.returncode == 0, r.stderr
    assert f"{len(first)} cached" in r.stdout
    hashes = planned_bodies(out, json.loads((out / "summary.json").read_text())["model"])
    second = [line["request_hash"] for line in log_lines(log_path, middle) if line.get("status") == 200
              and line["endpoint"] != "/v1/models"]
    assert not {hashes[i] for i in first} & set(second)  # nothing stored was asked again
    assert set(second) <= set(hashes.values())
    assert len(set(stored_ids(out))) == N_KILL
    # the first run answered everything it stored (and perhaps a few more it did not get to store)
    first_run = {line["request_hash"] for line in log_lines(log_path, start)[: middle - start]
                 if line.get("status") == 200}
    assert {hashes[i] for i in first} <= first_run
    assert read_jsonl(out / "data" / "part-00000.jsonl") == read_jsonl(ref / "data" / "part-00000.jsonl")


def test_401_is_reported_at_once_naming_the_url(servers, seed_shard, tmp_path):
    url, log_path = servers["clean"].base_url, servers["logs"]["clean"]
    before = len(log_lines(log_path))
    r = run_tool(*synth_args(seed_shard, tmp_path / "out", url, 4), env={"OPENAI_API_KEY": "wrong"})
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"error: {url}: HTTP 401") and "$OPENAI_API_KEY" in line
    assert not any(entry["endpoint"] != "/v1/models" for entry in log_lines(log_path, before))
    assert not (tmp_path / "out").exists()


def test_other_4xx_fail_at_once_and_are_counted(servers, seed_shard, tmp_path):
    """Whole-document seeds longer than the tiny model's 1024-token context: the server answers 400."""
    url, log_path = servers["clean"].base_url, servers["logs"]["clean"]
    before = len(log_lines(log_path))
    out = tmp_path / "out"
    r = run_tool(*synth_args(seed_shard, out, url, 8, "seeds.mode=head", "seeds.head_tokens=3000"),
                 env={"OPENAI_API_KEY": API_KEY})
    assert r.returncode == 1
    (gen,) = json.loads((out / "summary.json").read_text())["generation_this_run"]
    too_long = gen["failed"]["bad_request"]
    # the server's own first message is shown, and no plain rerun is advised (it would be refused again)
    assert f"{too_long} requests failed {{'bad_request': {too_long}}} (not cached); first: request " in r.stderr
    assert "HTTP 400" in r.stderr.split("first: ", 1)[1].splitlines()[0]
    assert "rerun the same command" not in r.stderr and "a plain rerun is refused the same way" in r.stderr
    assert too_long > 0 and gen["answered"] + too_long == gen["asked"] and gen["retries"] == 0
    statuses = [e["status"] for e in log_lines(log_path, before) if e["endpoint"] != "/v1/models"]
    assert statuses.count(400) == too_long  # each asked once, never retried
    assert "HTTP 400" in gen["failed_examples"][0]
    # the two closing lines, exactly: the server's message once (not again in the advice, no SDK "Error code" echo)
    example = gen["failed_examples"][0]
    assert re.fullmatch(r"request \d+ \([0-9a-f]+\): http://127\.0\.0\.1:\d+/v1: HTTP 400: This model's maximum "
                        r"context length is 1024 tokens\. However, you requested \d+ tokens \(\d+ in the prompt, 16 "
                        r"in the completion\)\. Please reduce the length of the prompt or max_tokens\.", example)
    assert r.stderr.strip().splitlines()[-2:] == [
        f"{too_long} requests failed {{'bad_request': {too_long}}} (not cached); first: {example}",
        f"{too_long} were refused as bad requests (HTTP 4xx): a plain rerun is refused the same way; lower "
        f"sampling.max_tokens or the seed length (seeds.max_lines, seeds.head_tokens) to fit the model's context "
        f"and rerun"]


def test_every_request_refused_is_a_user_error(servers, seed_shard, tmp_path):
    """sampling.max_tokens past the model's context: the server answers 400 to every request, a config mistake:
    one `error:` line (counts, the server's first message, what to change), exit 2, no summary lines, and the new
    output folder is removed again. (Some answered, or failures a rerun may cure: exit 1,
    test_other_4xx_fail_at_once_and_are_counted and the fault tests.)"""
    url = servers["clean"].base_url
    out = tmp_path / "new" / "out"
    r = run_tool(*synth_args(seed_shard, out, url, 4, "sampling.max_tokens=5000"), env={"OPENAI_API_KEY": API_KEY})
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""  # no "shard 0/1: ..." / "requests: ..." summary lines before the error
    assert not (tmp_path / "new").exists()
    # (stderr also holds the progress bars and one warning per refused request, as they happen)
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.stderr.strip().splitlines()[-1] == line
    m = re.fullmatch(r"error: 4 requests failed \{'bad_request': 4\} \(not cached\); first: (.*); 4 were refused as "
                     r"bad requests \(HTTP 4xx\): a plain rerun is refused the same way; lower sampling.max_tokens or "
                     r"the seed length \(seeds.max_lines, seeds.head_tokens\) to fit the model's context and rerun",
                     line)
    assert m and "HTTP 400: This model's maximum context length is 1024 tokens" in m.group(1), line
    # a folder that existed before keeps what it had (here: the answers of an earlier, fitting run)
    ok = run_tool(*synth_args(seed_shard, out, url, 2), env={"OPENAI_API_KEY": API_KEY})
    assert ok.returncode == 0, ok.stderr
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    r = run_tool(*synth_args(seed_shard, out, url, 4, "sampling.max_tokens=5000"), "--allow-config-change",
                 env={"OPENAI_API_KEY": API_KEY})
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert f"warning: 2 answers in {out} were made with another config" in r.stderr  # said before asking
    assert set(before) <= {p.relative_to(out).as_posix() for p in out.rglob("*")}
    assert len(stored_ids(out)) == 2


def test_unknown_model_is_refused_before_any_request(servers, seed_shard, tmp_path):
    url, log_path = servers["clean"].base_url, servers["logs"]["clean"]
    before = len(log_lines(log_path))
    out = tmp_path / "out"
    r = run_tool(*synth_args(seed_shard, out, url, 4), "--model", "nosuch", env={"OPENAI_API_KEY": API_KEY})
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert not [e for e in log_lines(log_path, before) if e["endpoint"] != "/v1/models"]  # no request was sent
    assert line.startswith(f"error: --model nosuch: the endpoint at {url} serves ['")
    assert not out.exists()
    # the same name from the config (not the flag) is named as the config key
    r = run_tool(*synth_args(seed_shard, out, url, 4), "backend.model=nosuch", env={"OPENAI_API_KEY": API_KEY})
    assert r.returncode == 2 and r.stderr.startswith(f"error: backend.model nosuch: the endpoint at {url} serves")
    assert not out.exists()


def test_several_base_urls_share_the_work(servers, seed_shard, tmp_path):
    logs = servers["logs"]
    before = {k: len(log_lines(p)) for k, p in logs.items()}
    urls = [servers["faulty"].base_url, servers["clean"].base_url]
    out = tmp_path / "out"
    r = run_tool("--seeds", seed_shard, "--output", str(out), "--base-url", *urls, "seeds.num_seeds=16",
                 "sampling.max_tokens=16", "backend.timeout=4", *BOUNDED, *LENIENT, env={"OPENAI_API_KEY": API_KEY})
    assert r.returncode == 0, r.stderr
    answered = {k: sum(1 for e in log_lines(p, before[k]) if e["status"] == 200 and e["endpoint"] != "/v1/models")
                for k, p in logs.items()}
    assert answered["faulty"] > 0 and answered["clean"] > 0 and sum(answered.values()) >= 16
    assert len(set(stored_ids(out))) == 16


def test_ctrl_c_exits_130_with_one_line_keeping_the_answers(servers, seed_shard, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, TOOL, *synth_args(seed_shard, out, servers["clean"].base_url, N_KILL,
                                                               "output.flush_every=1", "backend.concurrency=1")],
                            env={**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "OPENAI_API_KEY": API_KEY},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not stored_ids(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:  # a run that ignored the signal is not left running
        proc.kill()
        proc.wait()
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == ("synthesize.py: interrupted (Ctrl-C); finished outputs are kept, rerun "
                                            "the same command to resume")
    assert 1 <= len(set(stored_ids(out))) < N_KILL
    assert not [n for _, _, names in os.walk(out) for n in names if n.endswith(".tmp")]
