"""Fault injection (--fault-rate/--fault-seed/--fault-kinds) and the request log: draws are deterministic per
(seed, request body, arrival), a client with retries completes every request, and the log shows each request
answered exactly once with every injected fault recorded."""
import collections
import json
import threading

import openai
import pytest

from megasnow.generation.tiny_model import write_tiny_checkpoint
from megasnow.serve.faults import FaultInjector, parse_fault_kinds
from megasnow.serve.process import ServerProcess
from megasnow.serve.request_log import request_hash


def test_draws_are_deterministic_and_near_the_rate():
    hashes = [f"{i:064x}" for i in range(3000)]
    a, b = FaultInjector(0.2, seed=0), FaultInjector(0.2, seed=0)
    draws = [a.draw(h) for h in hashes]
    assert draws == [b.draw(h) for h in reversed(hashes)][::-1]  # arrival order of other requests is irrelevant
    assert draws != [FaultInjector(0.2, seed=1).draw(h) for h in hashes]
    faulted = [d for d in draws if d]
    assert 480 <= len(faulted) <= 720  # 600 expected (binomial sd ~22)
    counts = collections.Counter(faulted)
    assert set(counts) == {"500", "429", "stall"} and min(counts.values()) > 120
    # a retry of the same body is a new arrival with a fresh draw, so it eventually gets through
    c = FaultInjector(0.5, seed=3, kinds=("500",))
    assert None in [c.draw("same") for _ in range(20)] and "500" in [c.draw("same") for _ in range(20)]
    assert FaultInjector(0.0).draw("x") is None and FaultInjector(1.0, kinds=("429",)).draw("x") == "429"
    assert parse_fault_kinds(" 500, stall ") == ("500", "stall")
    with pytest.raises(ValueError, match="unknown kind 'boom'"):
        parse_fault_kinds("500,boom")


def test_clients_with_retries_complete_every_request_once(tmp_path):
    write_tiny_checkpoint(str(tmp_path / "ckpt"), seed=2)
    log = tmp_path / "requests.jsonl"
    kinds = ("500", "429", "stall")
    bodies = [{"model": "tiny", "prompt": f"def task_{i}(x):", "max_tokens": 4, "temperature": 0} for i in range(10)]
    # a seed whose first arrivals of these bodies include every kind of fault
    seed = next(s for s in range(1000)
                if set(kinds) <= {FaultInjector(0.3, s, kinds).draw(request_hash(b)) for b in bodies})
    with ServerProcess(tmp_path / "ckpt", "--served-model-name", "tiny", "--request-log", log, "--fault-rate",
                       "0.3", "--fault-seed", seed, "--fault-kinds", ",".join(kinds), "--fault-stall-s", "16",
                       "--threads", "1") as srv:
        # the client's timeout is outlasted by a stall (16 s), not by an answer on a loaded machine (which, timed
        # out as it is sent, would be retried and answered twice)
        c = openai.OpenAI(base_url=srv.base_url, api_key="unused", max_retries=10, timeout=8.0)
        answers = {}

        def ask(i):
            answers[i] = c.completions.create(**bodies[i]).choices[0].text

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    assert sorted(answers) == list(range(len(bodies)))  # every request completed
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    by_hash = collections.defaultdict(list)
    for e in entries:
        by_hash[e["request_hash"]].append(e)
    assert set(by_hash) == {request_hash(b) for b in bodies}  # the SDK sends exactly these bodies
    for h, arrivals in by_hash.items():
        assert [e["status"] for e in arrivals].count(200) == 1  # answered exactly once
        assert arrivals[-1]["status"] == 200
        replay = FaultInjector(0.3, seed=seed, kinds=kinds)
        assert [e["fault"] for e in arrivals] == [replay.draw(h) for _ in arrivals]  # the seeded draws
        for e in arrivals:
            # (an unfaulted arrival is 499 only if the client timed out on a very slow machine, then retried)
            expected_status = {None: (200, 499), "500": (500,), "429": (429,), "stall": (499,)}[e["fault"]]
            assert e["status"] in expected_status, e
    assert {e["fault"] for e in entries} >= set(kinds)  # every kind was injected, and retried past
