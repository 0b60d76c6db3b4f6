"""Ask a backend the requests that have no cached answer, store each answer as it arrives, show progress.

Progress (tqdm): requests done/total, requests/s, output tokens/s, retries, errors. Failed requests are counted by
kind with the first few messages kept for the summary; they are not cached, so the next run asks them again.
"""
import threading
import time

from tqdm import tqdm

from megasnow.synth.cache import response_record
from megasnow.utils.cli import warn

MAX_ERROR_EXAMPLES = 10
WARN_ERRORS = 3  # failed requests printed as warnings as they happen (the rest only counted)
HEARTBEAT_S = 15.0  # the bar is redrawn at least this often while no answer arrives (long batches)


def _heartbeat(bar, stop):
    while not stop.wait(HEARTBEAT_S):
        bar.refresh()  # shows the elapsed time: the run is alive even while a long batch runs


def run_requests(todo, backend, writer, progress=True, desc="requests"):
    """Send `todo` (PlannedRequests) through `backend`, appending answers to `writer`; returns this run's stats."""
    by_id = {}
    for p in todo:
        by_id.setdefault(p.id, p)
    stats = {"asked": len(by_id), "answered": 0, "failed": {}, "failed_examples": [], "first_errors": {}, "retries": 0,
             "prompt_tokens": 0, "completion_tokens": 0}
    start = time.perf_counter()
    bar = tqdm(total=len(by_id), desc=desc, unit="req", disable=not progress, mininterval=1.0, smoothing=0.1)
    last_postfix = 0.0
    stop = threading.Event()
    if progress:
        threading.Thread(target=_heartbeat, args=(bar, stop), name="progress-heartbeat", daemon=True).start()
    try:
        for result in backend.generate(p.to_generation_request() for p in by_id.values()):
            planned = by_id[result.request_id]
            stats["retries"] += max(0, result.attempts - 1)
            if result.ok:
                writer.add(response_record(planned, result))
                stats["answered"] += 1
                stats["prompt_tokens"] += result.prompt_tokens
                stats["completion_tokens"] += result.completion_tokens
            else:
                kind = result.error_kind or "error"
                stats["failed"][kind] = stats["failed"].get(kind, 0) + 1
                failed = sum(stats["failed"].values())
                stats["first_errors"].setdefault(kind, f"request {planned.index}: {result.error}")
                if len(stats["failed_examples"]) < MAX_ERROR_EXAMPLES:
                    stats["failed_examples"].append(f"request {planned.index} ({planned.id}): {result.error}")
                if failed <= WARN_ERRORS:
                    warn(f"request {planned.index} failed ({kind}): {result.error}")
            bar.update(1)
            now = time.perf_counter()
            if progress and now - last_postfix >= 1.0:
                last_postfix = now
                elapsed = max(now - start, 1e-9)
                bar.set_postfix_str(f"{bar.n / elapsed:.1f} req/s, {stats['completion_tokens'] / elapsed:.0f} "
                                    f"out tok/s, retries {stats['retries']}, errors {sum(stats['failed'].values())}",
                                    refresh=False)
    finally:
        stop.set()
        writer.flush()
        elapsed = max(time.perf_counter() - start, 1e-9)
        bar.set_postfix_str(f"{bar.n / elapsed:.1f} req/s, {stats['completion_tokens'] / elapsed:.0f} out tok/s, "
                            f"retries {stats['retries']}, errors {sum(stats['failed'].values())}", refresh=False)
        bar.close()
    stats["seconds"] = round(time.perf_counter() - start, 3)
    elapsed = max(stats["seconds"], 1e-9)
    stats["requests_per_s"] = round((stats["answered"] + sum(stats["failed"].values())) / elapsed, 3)
    stats["output_tokens_per_s"] = round(stats["completion_tokens"] / elapsed, 1)
    return stats
