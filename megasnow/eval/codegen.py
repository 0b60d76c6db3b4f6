"""Generate samples for a benchmark through any megasnow.generation backend, resumably, into an EvalPlus-compatible
samples JSONL (generation and scoring are separate stages joined by that file).

Requests go to the backend in chunks; each finished chunk is appended to `<out>.partial` and fsynced, so an
interrupted run resumes with the tasks it has not finished. The final file is written atomically in task order.
"""
import json
import os
import sys
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


def _read_partial(path, n):
    """{task_id: [records]} of tasks finished in an earlier run (a torn last line is ignored)."""
    done = {}
    if not os.path.exists(path):
        return done
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            done.setdefault(rec["task_id"], []).append(rec)
    return {t: recs for t, recs in done.items() if len(recs) == n}


def generate_samples(backend, benchmark, settings, out_path, progress=True, log=None):
    """Generate settings.n samples for every task of `benchmark` with `backend` into `out_path`.

    Returns a summary dict (counts, tokens, seconds, errors). Requests that fail (e.g. a prompt longer than the
    context) become samples with an empty program and an `error` field, so they count as failures when scored.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    partial = out_path + ".partial"
    fingerprint = {"benchmark": benchmark.fingerprint(), "settings": asdict(settings),
                   "model": getattr(backend, "model_name", "")}
    meta_path = partial + ".meta.json"
    if os.path.exists(partial):
        try:
            with open(meta_path, encoding="utf-8") as f:
                same = json.load(f) == fingerprint
        except (OSError, ValueError):
            same = False
        if not same:
            log(f"{partial}: left by a run with other settings or model; starting over")
            os.remove(partial)
    done = _read_partial(partial, settings.n)
    if done:
        log(f"resuming: {len(done)} of {len(benchmark.tasks)} tasks already generated in {partial}")
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(meta_path, "w", encoding="utf-8") as f:
        json.dump(fingerprint, f)
    todo = [(i, t) for i, t in enumerate(benchmark.tasks) if t.task_id not in done]
    stats = {"requests": 0, "samples": 0, "errors": 0, "completion_tokens": 0, "prompt_tokens": 0,
             "finish_reasons": {}}
    start = time.monotonic()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="generating", unit="task", file=sys.stderr,
                   mininterval=2.0 if sys.stderr.isatty() else 20.0)
    try:
        with open(partial, "a", encoding="utf-8") as out:
            for c in range(0, len(todo), settings.chunk):
                chunk = todo[c:c + settings.chunk]
                by_id = {f"{i}": (i, t) for i, t in chunk}
                requests = [build_request(t, settings.style, settings.params(i), f"{i}") for i, t in chunk]
                records = {}
                for result in backend.generate(requests):
                    i, task = by_id[result.request_id]
                    stats["requests"] += 1
                    stats["prompt_tokens"] += result.prompt_tokens
                    stats["completion_tokens"] += result.completion_tokens
                    if result.ok:
                        recs = [sample_record(task, settings.style, ch.text, j, ch.finish_reason)
                                for j, ch in enumerate(result.choices)]
                        for ch in result.choices:
                            stats["finish_reasons"][ch.finish_reason] = stats["finish_reasons"].get(
                                ch.finish_reason, 0) + 1
                    else:
                        stats["errors"] += 1
                        recs = [sample_record(task, settings.style, "", j, error=f"{result.error_kind}: "
                                              f"{result.error}") for j in range(settings.n)]
                    records[task.task_id] = recs
                    if bar is not None:
                        bar.update(1)
                for _, task in chunk:  # chunk order keeps the partial file readable; the final file is re-sorted
                    for rec in records.get(task.task_id, []):
                        out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                out.flush()
                os.fsync(out.fileno())
                stats["samples"] += sum(len(r) for r in records.values())
    finally:
        if bar is not None:
            bar.close()
    done = _read_partial(partial, settings.n)
    missing = [t.task_id for t in benchmark.tasks if t.task_id not in done]
    if missing:
        raise UserError(f"the backend returned no result for {len(missing)} tasks (first: {missing[:3]}); "
                        f"rerun the same command to generate them")
    total = write_samples(out_path, (rec for t in benchmark.tasks for rec in done[t.task_id]))
    os.remove(partial)
    os.remove(meta_path)
    stats.update(seconds=time.monotonic() - start, samples_written=total,
                 resumed_tasks=len(benchmark.tasks) - len(todo))
    if stats["errors"]:
        log(f"warning: {stats['errors']} requests failed; their samples are empty programs (scored as failures); "
            f"see the 'error' field in {out_path}")
    return stats
