"""Generate samples for a benchmark through any megasnow.generation backend, resumably, into an EvalPlus-compatible
samples JSONL (generation and scoring are separate stages joined by that file).

Requests go to the backend in chunks; each finished task is appended to `<out>.partial` as it arrives (flushed at
once, fsynced after every chunk and on the way out), so an interrupted run resumes with the tasks it has not finished.
A task whose request failed is not written: a rerun asks it again. The final file is written atomically in task
order once every task has its samples.
"""
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass

from megasnow.errors import UserError
from megasnow.eval.prompts import STYLES, build_request, sample_record
from megasnow.eval.samples import write_samples
from megasnow.generation.protocol import SamplingParams


@dataclass
class GenerationSettings:
    """style: 'completion', 'chat' or 'infill' (megasnow.eval.prompts); n samples per task at `temperature` (0: greedy, then n must be 1);
    max_tokens per sample; seed: sample j of task i uses seed + 1000 * i + j (reproducible, whatever shares a batch);
    chunk: requests per backend call between checkpoints of the partial file."""

    style: str = "completion"
    n: int = 1
    temperature: float = 0.0
    top_p: float = 0.95
    max_tokens: int = 512
    seed: int = 0
    chunk: int = 64

    def __post_init__(self):
        if self.style not in STYLES:
            raise UserError(f"--prompt-style must be one of {STYLES}, got {self.style!r}")
        if self.n < 1 or self.max_tokens < 1 or self.chunk < 1:
            raise UserError("--n, --max-tokens and the chunk size must be >= 1")
        if self.temperature == 0 and self.n > 1:
            raise UserError(f"--n {self.n} with --temperature 0 gives {self.n} identical greedy samples; set "
                            f"--temperature > 0 (e.g. 0.8) for pass@k, or --n 1 for greedy pass@1")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top-p must be in (0, 1], got {self.top_p}")

    def params(self, task_index):
        return SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature,
                              top_p=self.top_p if self.temperature > 0 else 1.0,
                              seed=self.seed + 1000 * task_index, n=self.n)


class GenerationFailed(UserError):
    """Every generation request of a run failed (a wrong model name, prompts longer than the context, infilling
    against a model without FIM tokens): nothing was generated and nothing is left behind."""


class IncompleteGeneration(UserError):
    """Some tasks' requests failed: the finished ones are kept in `partial` (a rerun asks only the failed ones again)
    and the final samples file is not written. `stats` holds the run's counts (failed_tasks, first_error)."""

    def __init__(self, message, stats, partial):
        super().__init__(message)
        self.stats, self.partial = stats, partial


def read_partial(path, n):
    """{task_id: [records]} of tasks finished in an earlier run (a torn last line and failed samples are ignored)."""
    done = {}
    if not os.path.exists(path):
        return done
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "task_id" in rec and not rec.get("error"):
                done.setdefault(rec["task_id"], []).append(rec)
    return {t: recs for t, recs in done.items() if len(recs) == n}


def precheck(backend, requests):
    """Refuse up front (GenerationFailed) requests a backend can tell it cannot run before generating (a prompt plus
    max_tokens longer than a local model's context, infilling without FIM tokens): one line with the count and the
    backend's first message. Backends without a `check(request)` method (remote ones) are not checked."""
    check = getattr(backend, "check", None)
    if check is None:
        return
    bad = [(r, e) for r, e in ((r, check(r)) for r in requests) if e]
    if bad:
        raise GenerationFailed(f"{len(bad)} of {len(requests)} generation requests cannot run on "
                               f"{getattr(backend, 'model_name', '') or 'this model'}: {bad[0][1]}"
                               + (" (lower --max-tokens, or --limit the tasks)" if "context length" in bad[0][1]
                                  else ""))


class _Progress:
    """Progress of generation: a tqdm bar on a terminal, redrawn at least every `interval` seconds even while no
    task finishes (elapsed, rate, ETA); elsewhere (logs, CI) a line with counts, rate and ETA every `interval`."""

    def __init__(self, total, log, interval=10.0, enabled=True):
        self.total, self.count, self.log, self.interval = total, 0, log, interval
        self.start = time.monotonic()
        self.bar = None
        self._stop = threading.Event()
        self._thread = None
        if not enabled:
            return
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="generating", unit="task", file=sys.stderr, mininterval=1.0)
        self._thread = threading.Thread(target=self._beat, name="generation-progress", daemon=True)
        self._thread.start()

    def line(self):
        elapsed = time.monotonic() - self.start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        eta = f"{(self.total - self.count) / rate:.0f}s" if rate > 0 else "unknown"
        return (f"generating: {self.count}/{self.total} tasks in {elapsed:.0f}s ({rate:.2f} tasks/s, "
                f"ETA {eta})")

    def _beat(self):
        while not self._stop.wait(self.interval):
            if self.bar is not None:
                self.bar.refresh()
            else:
                self.log(self.line())

    def update(self, n=1):
        self.count += n
        if self.bar is not None:
            self.bar.update(n)

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.bar is not None:
            self.bar.close()


def _remove_if_empty(partial, meta_path, n, created_dir):
    """Remove the partial file and its meta when they hold no finished task, and the folder this run created when
    it is left empty (a failed run leaves nothing behind). Returns True when it removed them."""
    if read_partial(partial, n):
        return False
    for path in (partial, meta_path):
        if os.path.exists(path):
            os.remove(path)
    if created_dir and os.path.isdir(created_dir) and not os.listdir(created_dir):
        os.rmdir(created_dir)
    return True


def generate_samples(backend, benchmark, settings, out_path, progress=True, log=None, progress_interval=10.0):
    """Generate settings.n samples for every task of `benchmark` with `backend` into `out_path`.

    Returns a summary dict (counts, tokens, seconds, model, resumed_tasks). A task whose request fails is not
    written, so a rerun asks it again. Raises GenerationFailed (a UserError) when requests are known to fail before
    generating (`precheck`) or when every request of the run failed (nothing is left behind then), and
    IncompleteGeneration (a UserError carrying the stats and the partial file) when only some failed: the finished
    tasks stay in `<out_path>.partial` and `out_path` is not written.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    start_backend = getattr(backend, "start", None)
    if start_backend is not None:
        start_backend()  # check URLs/keys and resolve the served model name before any file is written
    partial = out_path + ".partial"
    meta_path = partial + ".meta.json"
    model = getattr(backend, "model_name", "")
    fingerprint = {"benchmark": benchmark.fingerprint(), "settings": asdict(settings), "model": model}
    stale = False
    if os.path.exists(partial):
        try:
            with open(meta_path, encoding="utf-8") as f:
                stale = json.load(f) != fingerprint
        except (OSError, ValueError):
            stale = True
    done = {} if stale else read_partial(partial, settings.n)
    todo = [(i, t) for i, t in enumerate(benchmark.tasks) if t.task_id not in done]
    precheck(backend, [build_request(t, settings.style, settings.params(i), f"{i}") for i, t in todo])
    if stale:
        log(f"{partial}: left by a run with other settings or model; starting over")
        os.remove(partial)
    if done:
        log(f"resuming: {len(done)} of {len(benchmark.tasks)} tasks already generated in {partial}")
    folder = os.path.dirname(os.path.abspath(out_path))
    created_dir = None
    if not os.path.isdir(folder):
        created_dir = folder
        os.makedirs(folder)
    with open(meta_path, "w", encoding="utf-8") as f:
        json.dump(fingerprint, f)
    stats = {"requests": 0, "samples": 0, "errors": 0, "completion_tokens": 0, "prompt_tokens": 0,
             "finish_reasons": {}, "error_kinds": {}, "first_error": None}
    begin = time.monotonic()
    bar = _Progress(len(todo), log, progress_interval, enabled=progress)
    try:
        with open(partial, "a", encoding="utf-8") as out:
            try:
                for c in range(0, len(todo), settings.chunk):
                    chunk = todo[c:c + settings.chunk]
                    by_id = {f"{i}": (i, t) for i, t in chunk}
                    requests = [build_request(t, settings.style, settings.params(i), f"{i}") for i, t in chunk]
                    for result in backend.generate(requests):
                        i, task = by_id[result.request_id]
                        stats["requests"] += 1
                        stats["prompt_tokens"] += result.prompt_tokens
                        stats["completion_tokens"] += result.completion_tokens
                        bar.update(1)
                        if not result.ok:
                            stats["errors"] += 1
                            kind = result.error_kind or "error"
                            stats["error_kinds"][kind] = stats["error_kinds"].get(kind, 0) + 1
                            if stats["first_error"] is None:
                                stats["first_error"] = f"{task.task_id}: {result.error}"
                            continue
                        for j, ch in enumerate(result.choices):
                            rec = sample_record(task, settings.style, ch.text, j, ch.finish_reason)
                            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                            stats["finish_reasons"][ch.finish_reason] = stats["finish_reasons"].get(
                                ch.finish_reason, 0) + 1
                        out.flush()  # a finished task survives a Ctrl-C or a crash of this process
                        stats["samples"] += len(result.choices)
                    os.fsync(out.fileno())
            finally:
                out.flush()
                os.fsync(out.fileno())
    except BaseException:
        bar.close()
        _remove_if_empty(partial, meta_path, settings.n, created_dir)
        raise
    bar.close()
    done = read_partial(partial, settings.n)
    missing = [t.task_id for t in benchmark.tasks if t.task_id not in done]
    stats.update(seconds=time.monotonic() - begin, model=model, resumed_tasks=len(benchmark.tasks) - len(todo),
                 failed_tasks=len(missing))
    if missing and not done:
        _remove_if_empty(partial, meta_path, settings.n, created_dir)
        raise GenerationFailed(f"all {stats['requests']} generation requests failed: "
                               f"{stats['first_error'] or 'the backend returned no result'}")
    if missing:
        raise IncompleteGeneration(
            f"{len(missing)} of {len(benchmark.tasks)} tasks failed to generate (first: "
            f"{stats['first_error'] or missing[0] + ': the backend returned no result'}); the {len(done)} finished "
            f"are kept in {partial}: rerun the same command to retry the failed ones", stats, partial)
    total = write_samples(out_path, (rec for t in benchmark.tasks for rec in done[t.task_id]))
    os.remove(partial)
    os.remove(meta_path)
    stats["samples_written"] = total
    return stats
