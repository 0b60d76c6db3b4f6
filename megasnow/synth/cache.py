"""The response cache: answered requests, keyed by content id, in chunk files written atomically.

`<output>/responses/<tag>/chunk-<seq>.jsonl`: each chunk is written whole (temp name, fsync, rename), so a chunk
under its final name is the done marker of every response in it and a crash loses at most the responses not yet
flushed (`flush_every` of them, or `flush_seconds` worth). Only successful answers are stored: a failure is never
cached, so a rerun asks it again. Drivers of different shards use different tags, so they never write the same
file, and their folders merge by copying (concatenation).
"""
import glob
import os
import time

import orjson

from megasnow.utils.atomic import atomic_write
from megasnow.utils.records import ReadReport, read_shards

RESPONSES_DIR = "responses"


def response_record(planned, result):
    """The cached form of one answered request (its choices plus the provenance the outputs carry)."""
    return {"id": planned.id, "index": planned.index, "seed_id": planned.seed.seed_id, "lang": planned.seed.lang,
            "sample": planned.sample, "model": result.model,
            "choices": [{"text": c.text, "finish_reason": c.finish_reason, "completion_tokens": c.completion_tokens}
                        for c in result.choices],
            "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "system_fingerprint": result.system_fingerprint, "attempts": result.attempts}


def load_responses(folders, report=None, ids_by_folder=None):
    """{content id: record} from every chunk under `folders` (the first record of an id wins, in file order).
    `ids_by_folder`: a dict that receives {folder: set of the content ids cached there} (every folder a key)."""
    report = ReadReport() if report is None else report
    files, folder_of = [], {}
    for folder in folders:
        found = sorted(glob.glob(os.path.join(glob.escape(folder), RESPONSES_DIR, "**", "chunk-*.jsonl"),
                                 recursive=True))
        folder_of.update((f, folder) for f in found)
        files += found
        if ids_by_folder is not None:
            ids_by_folder.setdefault(folder, set())
    answered = {}
    if files:
        for path, _, rec in read_shards(files, report):
            if isinstance(rec.get("id"), str) and isinstance(rec.get("choices"), list):
                answered.setdefault(rec["id"], rec)
                if ids_by_folder is not None and path in folder_of:
                    ids_by_folder[folder_of[path]].add(rec["id"])
    return answered


class ChunkWriter:
    """Buffers response records and writes them as atomic chunk files under `<output>/responses/<tag>/`."""

    def __init__(self, output, tag, flush_every=64, flush_seconds=10.0):
        self.folder = os.path.join(output, RESPONSES_DIR, tag)
        os.makedirs(self.folder, exist_ok=True)
        self.flush_every, self.flush_seconds = max(1, flush_every), flush_seconds
        for stale in glob.glob(os.path.join(glob.escape(self.folder), ".chunk-*.tmp")):  # a killed run's
            os.unlink(stale)
        existing = glob.glob(os.path.join(glob.escape(self.folder), "chunk-*.jsonl"))
        self.seq = 1 + max((int(os.path.basename(p)[6:-6]) for p in existing), default=-1)
        self.buffer, self.last_flush, self.written = [], time.monotonic(), 0

    def add(self, record):
        self.buffer.append(orjson.dumps(record) + b"\n")
        if len(self.buffer) >= self.flush_every or time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()

    def flush(self):
        if self.buffer:
            with atomic_write(os.path.join(self.folder, f"chunk-{self.seq:06d}.jsonl"), "wb") as f:
                f.write(b"".join(self.buffer))
            self.seq += 1
            self.written += len(self.buffer)
            self.buffer = []
        self.last_flush = time.monotonic()
