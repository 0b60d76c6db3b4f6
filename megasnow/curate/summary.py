"""Human-readable progress and summaries of a curation run: counts, sizes and rates in adaptive units, the
heartbeat lines long tasks print, and the closing summary of tools/curate.py."""
import os
import sys
import time

from tqdm import tqdm


def format_count(n):
    """12 -> '12', 25512 -> '25,512'."""
    return f"{int(n):,}"


def format_bytes(n):
    """Bytes in the largest decimal unit that keeps the number >= 1: '532 B', '4.1 kB', '220.2 MB', '1.3 GB'."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def format_rate(amount, seconds, unit, as_bytes=False):
    """A rate that never rounds to 0: '13.3 MB/s', '993 files/s', '29 files/min', '1.9 min/file'.

    `amount` of `unit` in `seconds`; with as_bytes the amount is bytes and the unit is chosen by size.
    """
    if amount <= 0:
        return f"0 {unit}/s" if not as_bytes else "0 B/s"
    seconds = max(seconds, 1e-9)
    per_s = amount / seconds
    if as_bytes:
        return format_bytes(per_s) + "/s"
    if per_s >= 1:
        return f"{per_s:,.0f} {unit}/s" if per_s >= 100 else f"{per_s:.3g} {unit}/s"
    if per_s * 60 >= 1:
        return f"{per_s * 60:.3g} {unit}/min"
    each = seconds / amount
    return f"{each:.3g} s/{unit.rstrip('s')}" if each < 60 else f"{each / 60:.3g} min/{unit.rstrip('s')}"


def format_seconds(s):
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


class Heartbeat:
    """Prints `<label>: <n> files (<size>, <rate>) ...` at most every `interval` seconds while a task runs.

    Lines go to stderr through tqdm.write, so an in-process progress bar is redrawn below them; in worker processes
    and on Ray (log_to_driver) they reach the user's terminal as plain lines. interval <= 0 prints on every call.
    """

    def __init__(self, label, interval):
        self.label, self.interval = label, interval
        self.start = self.last = time.monotonic()

    def beat(self, files, nbytes, where=""):
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last = now
        elapsed = now - self.start
        tail = f" (reading {where})" if where else ""
        tqdm.write(f"{self.label}: {format_count(files)} files, {format_bytes(nbytes)} in {format_seconds(elapsed)} "
                   f"({format_rate(files, elapsed, 'files')}, {format_rate(nbytes, elapsed, '', as_bytes=True)})"
                   f"{tail}", file=sys.stderr)


def summary_lines(stats, output, inputs):
    """The closing lines of a run: what was read, kept and removed, how fast, and where the outputs are."""
    stages = stats["stages"]
    ingest = stages.get("ingest", {}).get("all", {})
    files_in, bytes_in = ingest.get("files_in", 0), ingest.get("bytes_in", 0)
    seconds = stats["seconds"]["total"]
    docs = stages.get("documents", {}).get("all", {})
    kept_files, n_docs = docs.get("files_in", 0), docs.get("files_out", 0)
    launch = stats.get("this_launch") or {}
    if files_in and launch.get("tasks_done_before"):
        # a resumed run: the rate is that of the reading this launch did, never the total over this launch's time
        read = launch.get("files_in", 0)
        rate = (f"this launch read {format_count(read)} files ({format_bytes(launch.get('bytes_in', 0))}) in "
                f"{format_seconds(seconds)} ({format_rate(read, seconds, 'files')}, "
                f"{format_rate(launch.get('bytes_in', 0), seconds, '', as_bytes=True)})" if read else
                f"this launch read no input and ran {format_count(launch.get('tasks_run', 0))} remaining tasks in "
                f"{format_seconds(seconds)}")
        lines = [f"curated {format_count(files_in)} files ({format_bytes(bytes_in)}) from {len(inputs)} input(s): "
                 f"{format_count(kept_files)} files kept in {format_count(n_docs)} documents; resumed "
                 f"({format_count(launch['tasks_done_before'])} tasks done by an earlier launch, "
                 f"{format_count(launch.get('prepare_tasks_done_before', 0))} of "
                 f"{format_count(launch.get('prepare_tasks_done_before', 0) + launch.get('prepare_tasks', 0))} input "
                 f"shards read before): {rate}"]
    elif files_in:
        lines = [f"curated {format_count(files_in)} files ({format_bytes(bytes_in)}) from {len(inputs)} input(s) in "
                 f"{format_seconds(seconds)} ({format_rate(files_in, seconds, 'files')}, "
                 f"{format_rate(bytes_in, seconds, '', as_bytes=True)}): {format_count(kept_files)} files kept in "
                 f"{format_count(n_docs)} documents"]
    else:
        lines = [f"curated nothing: no source files in {len(inputs)} input(s) ({format_seconds(seconds)})"]
    if stats.get("tasks_executed") and not any(stats["tasks_executed"].values()):
        lines.append(f"{output} already held this finished run: nothing left to do")
    removed = []
    for stage in ("ingest", "filter", "decontaminate", "exact_dedup", "near_dedup"):
        n = sum(stages.get(stage, {}).get("all", {}).get("removed", {}).values())
        if n:
            removed.append(f"{stage} {format_count(n)}")
    bad = sum(stats["bad_input"].values())
    extra = [f"removed: {', '.join(removed)}"] if removed else ["removed: nothing"]
    if bad:
        kinds = sorted(stats["bad_input"].items(), key=lambda kv: -kv[1])
        extra.append(f"bad input: {format_count(bad)} ({', '.join(f'{k} {v}' for k, v in kinds[:6])}"
                     f"{', ...' if len(kinds) > 6 else ''})")
    excluded = stats.get("excluded_dirs", {})
    if excluded:
        extra.append(f"excluded folders: {format_count(sum(excluded.values()))} "
                     f"({', '.join(f'{k} {v}' for k, v in sorted(excluded.items()))})")
    lines.append("; ".join(extra))
    doc_files = stats.get("documents_files", [])
    report = os.path.join(output, "stats.json")
    if doc_files:
        n = len(doc_files)
        files = f"{n} file{'s' if n != 1 else ''}"
        lines.append(f"documents: {os.path.join(output, 'documents')} ({files}); report: {report}")
    else:
        lines.append(f"no documents were written (nothing survived curation); report: {report}")
    return lines
