"""Seeded fault injection for testing clients (retries, deadlines, resume): a share of requests answered 500 or
429, or stalled, decided by a hash of (seed, request body hash, how many times that body arrived before)."""
import hashlib

FAULT_KINDS = ("500", "429", "stall")


def parse_fault_kinds(text):
    """'500,429,stall' -> ('500', '429', 'stall'); raises ValueError naming a kind it does not know."""
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in FAULT_KINDS]
    if bad or not kinds:
        raise ValueError(f"--fault-kinds: unknown kind {bad[0] if bad else text!r}; use a comma list of "
                         f"{', '.join(FAULT_KINDS)}")
    return kinds


class FaultInjector:
    """`draw(request_hash)` -> None or the fault kind for this arrival.

    Deterministic for a given seed whatever the arrival order or concurrency: the draw of the k-th arrival of a
    body is sha256(f"{seed}:{request_hash}:{k}"), so a client's retry of the same body gets a fresh draw (it
    eventually succeeds) and a rerun of the same client sees the same faults. rate: fraction of arrivals
    faulted; kinds: chosen uniformly from them.
    """

    def __init__(self, rate=0.0, seed=0, kinds=FAULT_KINDS):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"--fault-rate must be in [0, 1], got {rate}")
        self.rate, self.seed, self.kinds = rate, seed, tuple(kinds)
        self._arrivals = {}
        self.injected = {k: 0 for k in self.kinds}

    def draw(self, request_hash):
        if self.rate <= 0.0:
            return None
        k = self._arrivals.get(request_hash, 0)
        self._arrivals[request_hash] = k + 1
        digest = hashlib.sha256(f"{self.seed}:{request_hash}:{k}".encode()).digest()
        if int.from_bytes(digest[:8], "little") / 2.0 ** 64 >= self.rate:
            return None
        kind = self.kinds[int.from_bytes(digest[8:16], "little") % len(self.kinds)]
        self.injected[kind] += 1
        return kind
