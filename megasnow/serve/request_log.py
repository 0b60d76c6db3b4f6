"""The request log of megasnow.serve (--request-log FILE): one JSON line per request the server finished with,
so tests and operators can show which request bodies were answered, and how often."""
import hashlib
import json
import threading
import time


def request_hash(body):
    """sha256 hex of the request body's canonical JSON (keys sorted, no spaces, UTF-8): the same for the same
    request whatever the client's key order or whitespace. `body` is the parsed JSON (a dict)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class RequestLog:
    """Appends one JSON object per line: time (unix s), endpoint, request_hash, status (200 answered, 4xx/5xx
    error, 499 client went away before the answer), fault (injected kind or null), stream, n, prompt_tokens,
    completion_tokens, finish_reasons, batch_sizes (of the batches that ran it), latency_s, error (message).
    Each line is flushed as written, so it survives a crash of the client or the server."""

    def __init__(self, path):
        self.path = path
        self._file = open(path, "a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()

    def write(self, **fields):
        fields.setdefault("time", round(time.time(), 3))
        line = json.dumps(fields, sort_keys=True, ensure_ascii=False)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self):
        with self._lock:
            self._file.close()
