"""Generate samples for a benchmark through any megasnow.generation backend, resumably, into an EvalPlus-compatible
samples JSONL (generation and scoring are separate stages joined by that file).

Requests go to the backend in chunks; each finished task is appended to `<out>.partial` as it arrives (flushed at
once, fsynced after every chunk and on the way out), so an interrupted run resumes with the tasks it has not finished.
A task whose request failed is not written: a rerun asks it again. The final file is written atomically in task
order once every task has its samples.

The run's identity (benchmark, backend, model, prompt style, sampling parameters, ...) is saved beside the samples in
`<out>.meta.json` and compared (`check_identity`) before a partial file is resumed or a finished one reused: files of
another run are refused, never resumed or scored as this one's. Beside it the meta file records the model name the
backend resolved (`served_model`: the served name when the OpenAI backend was given no model), reported on reuse.
"""
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace

from megasnow.errors import UserError
from megasnow.eval.prompts import STYLES, build_request, sample_record
from megasnow.eval.samples import write_samples
from megasnow.generation.protocol import (SamplingParamError, checked_sampling_params, context_tokens,
                                         is_context_length_error)
from megasnow.generation.protocol import failure_advice as protocol_failure_advice
from megasnow.utils.atomic import atomic_write_text


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
        if self.chunk < 1:
            raise UserError(f"the chunk size must be >= 1, got {self.chunk}")
        self._sampling(self.top_p, self.seed)  # every value SamplingParams refuses, named by its flag, up front
        if self.temperature == 0 and self.n > 1:
            raise UserError(f"--n {self.n} with --temperature 0 gives {self.n} identical greedy samples; set "
                            f"--temperature > 0 (e.g. 0.8) for pass@k, or --n 1 for greedy pass@1")

    def params(self, task_index):
        """SamplingParams of task `task_index` (top_p applies when sampling; greedy decoding ignores it)."""
        return self._sampling(self.top_p if self.temperature > 0 else 1.0, self.seed + 1000 * task_index)

    def _sampling(self, top_p, seed):
        """SamplingParams with these settings; a value it refuses raises UserError naming the flag."""
        try:
            return checked_sampling_params(SAMPLING_FLAGS, max_tokens=self.max_tokens, temperature=self.temperature,
                                           top_p=top_p, seed=seed, n=self.n)
        except SamplingParamError as e:
            raise UserError(str(e)) from None


# the evaluate.py flag of each SamplingParams field GenerationSettings sets
SAMPLING_FLAGS = {"max_tokens": "--max-tokens", "temperature": "--temperature", "top_p": "--top-p", "n": "--n"}


class GenerationFailed(UserError):
    """Every generation request of a run failed (a wrong model name, prompts longer than the context, infilling
    against a model without FIM tokens): nothing was generated and nothing is left behind."""


class IncompleteGeneration(UserError):
    """Some tasks' requests failed: the finished ones are kept in `partial` (a rerun asks only the failed ones again)
    and the final samples file is not written. `stats` holds the run's counts (failed_tasks, first_error)."""

    def __init__(self, message, stats, partial):
        super().__init__(message)
        self.stats, self.partial = stats, partial


class RunMismatch(UserError):
    """An output that holds samples (finished or partial) of a run with another identity than this one."""


def identity_path(out_path):
    """Where the identity of the run that writes `out_path` (and `<out_path>.partial`) is saved."""
    return out_path + ".meta.json"


def default_identity(benchmark, settings, model, skip_too_long=False):
    """The identity generate_samples saves when its caller gives none: benchmark, sampling settings and model."""
    ident = {"benchmark": benchmark.fingerprint(), "model": model, "skip_too_long": skip_too_long}
    ident.update({k: v for k, v in asdict(settings).items() if k != "chunk"})  # (chunk: how, not what)
    ident["prompt_style"] = ident.pop("style")  # the flag's name, for messages naming what differs
    return ident


_SHOWN_CHARS = {"benchmark": 12}  # keys whose long values (fingerprints) messages cut to their first characters


def _show(key, value):
    """`value` as a message shows it: repr; a long fingerprint cut inside its quotes ('c66702654004...')."""
    cut = _SHOWN_CHARS.get(key)
    if cut and isinstance(value, str) and len(value) > cut + 3:
        return repr(value[:cut] + "...")
    return repr(value)


SERVED_MODEL = "served_model"  # meta-file key beside the identity: the model name the backend resolved and used


def served_model(out_path):
    """The model name the backend reported when it generated `out_path` (for `--backend openai` without --model:
    the name the server serves), from identity_path(out_path); "" when not recorded (an older version's file)."""
    try:
        with open(identity_path(out_path), encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return ""
    return saved.get(SERVED_MODEL) or "" if isinstance(saved, dict) else ""


def saved_identity(out_path):
    """The identity (and served model name) saved beside the samples `out_path` by the run that generated them
    (identity_path); {} when there is none or it cannot be read (samples made by another tool)."""
    try:
        with open(identity_path(out_path), encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def check_identity(out_path, identity, advice, served=None):
    """Compare `identity` (a flat dict) with the one saved beside `out_path` when samples of an earlier run are there
    (`out_path` or `<out_path>.partial`). Returns True when they are (same identity: resume or reuse them), False
    when there are none. Raises RunMismatch naming the keys that differ (or the missing record), plus `advice`.

    `served` (the model name the started backend resolved; None when no backend was started) is compared with the
    served name saved beside the identity (SERVED_MODEL, not part of the identity: the identity holds the --model
    given, which may be '' = whatever the server serves) when both are known, so samples of one served model are
    never resumed with another's behind the same URL."""
    held = [p for p in (out_path, out_path + ".partial") if os.path.exists(p)]
    if not held:
        return False
    meta = identity_path(out_path)
    try:
        with open(meta, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError):
        raise RunMismatch(f"{held[0]}: holds samples without a readable record of the run that wrote them ({meta}), "
                          f"so they cannot be told to be this run's; {advice}") from None
    if not isinstance(saved, dict):
        saved = {}
    saved_served = saved.pop(SERVED_MODEL, None)
    if saved == identity:
        if served and saved_served and served != saved_served:
            raise RunMismatch(f"{held[0]}: holds samples of another run: {SERVED_MODEL} ({saved_served!r} there, "
                              f"{served!r} now: the endpoint serves another model); {advice}")
        return True
    keys = [k for k in sorted(set(saved) | set(identity)) if saved.get(k) != identity.get(k)]
    diff = ", ".join(f"{k} ({_show(k, saved.get(k))} there, {_show(k, identity.get(k))} now)" for k in keys)
    raise RunMismatch(f"{held[0]}: holds samples of another run: {diff}; {advice}")


NO_FIM_ADVICE = ("--infill asks for fill-in-the-middle (the OpenAI `suffix`), which needs a model whose tokenizer has "
                 "FIM tokens (<fim_prefix>, <fim_suffix>, <fim_middle> or another family's)")


def failure_advice(stats, infill=False):
    """What to do after failed generation requests (generation.protocol.failure_advice in this tool's flags);
    `infill`: the run sent `suffix` (--infill), which a model without FIM tokens refuses."""
    change = "--model, --prompt-style, sampling flags, --max-tokens"
    if infill:
        change = ("--infill: drop it if the model has no FIM tokens (or use a model trained with fill-in-the-middle, "
                  "data.fim); --model, sampling flags, --max-tokens")
    return protocol_failure_advice(
        stats.get("error_kinds", {}), stats.get("first_errors", {}), change=change,
        too_long_fix="lower --max-tokens, or pass --skip-too-long to score the tasks that do not fit the model's "
                     "context as failed",
        already_shown=stats.get("first_error"))  # every caller's line quotes first_error


def read_partial(path, n):
    """{task_id: [records]} of tasks finished in an earlier run (a torn last line and failed samples are ignored; a
    task skipped as too long for the context counts as finished)."""
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


def _largest_fitting(check, request):
    """The largest max_tokens (< the request's) at which `check` accepts `request`, 0 when none does (monotone:
    a request that fits with m new tokens fits with fewer)."""
    lo, hi = 0, request.params.max_tokens - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if check(replace(request, params=replace(request.params, max_tokens=mid))) is None:
            lo = mid
        else:
            hi = mid - 1
    return lo


def precheck(backend, requests, skip_too_long=False, generated_before=0):
    """Refuse up front (GenerationFailed) requests a backend can tell it cannot run before generating (a prompt plus
    max_tokens longer than a local model's context, infilling without FIM tokens): one line with the count, the
    backend's first message and advice that works (the largest --max-tokens at which every request fits, if any, and
    --skip-too-long). With `skip_too_long`, requests refused only for the context length are returned instead
    ({request_id: message}) for the caller to score as failed, unless none of them fits and no task was generated
    before (`generated_before`: tasks with samples from an earlier run): a score over no generated task is no
    result, so that is refused like a run without --skip-too-long. Backends that cannot tell (remote ones) pass
    all."""
    check = getattr(backend, "check", None)
    if check is None:
        return {}
    bad = [(r, e) for r, e in ((r, check(r)) for r in requests) if e]
    too_long = {r.id: e for r, e in bad if is_context_length_error(e)}
    other = [(r, e) for r, e in bad if r.id not in too_long]
    name = getattr(backend, "model_name", "") or "this model"
    no_fim = [r for r, e in other if r.suffix is not None and check(replace(r, suffix=None)) is None]
    trained = getattr(getattr(backend, "engine", None), "fim_trained", None)
    refused = [r for r, e in bad if r.suffix is not None]
    if refused and trained is not None and trained.trained is False:  # its config says it never learnt FIM
        from megasnow.generation.model_files import not_trained_message

        folder = os.path.dirname(trained.source) if trained.source else name
        raise GenerationFailed(f"{len(refused)} of {len(requests)} generation requests cannot run: --infill asks "
                               f"for fill-in-the-middle, but " + not_trained_message(
                                   folder, trained, "--infill", "evaluate a model trained with data.fim.rate > 0"))
    if no_fim:  # refused for its suffix alone: the model cannot infill (the user asked --infill, not a suffix)
        raise GenerationFailed(f"{len(no_fim)} of {len(requests)} generation requests cannot run on {name}: "
                               f"{NO_FIM_ADVICE}, and this model's has none: drop --infill, or use a model trained "
                               f"with fill-in-the-middle (data.fim)")
    if other:
        raise GenerationFailed(f"{len(other)} of {len(requests)} generation requests cannot run on {name}: "
                               f"{other[0][1]}")
    none_fits = len(too_long) == len(requests) and not generated_before
    if too_long and (not skip_too_long or none_fits):
        fits = [_largest_fitting(check, r) for r, e in bad]
        fit, first, fitting = min(fits), bad[0][1], len(requests) - len(bad)
        skip = ("pass --skip-too-long to generate the {} that fit and score the others as failed, pass@k staying over "
                "every task")
        if fit >= 1:
            advice = f"--max-tokens {fit} makes every task fit" + (f"; or {skip.format(fitting)}" if fitting else "")
        elif fitting:
            advice = (f"no --max-tokens makes every task fit (some prompts alone fill the context); or "
                      f"{skip.format(fitting)}")
        elif max(fits) >= 1:  # none fits now, and some prompts alone fill the context: offer what makes any fit
            # fits[i]: the largest --max-tokens at which request i fits (< 1: its prompt alone fills the context);
            # the smallest positive one lets the most tasks fit
            most = min(f for f in fits if f >= 1)
            some = sum(f >= most for f in fits)
            which = "1 task fits" if some == 1 else f"{some} tasks fit"
            advice = (f"no --max-tokens makes every task fit (some prompts alone fill the context), and none fits at "
                      f"this one; {which} at --max-tokens {most}: pass --max-tokens {most} --skip-too-long to "
                      f"generate {'it' if some == 1 else 'them'} and score the others as failed")
        else:
            advice = ("no task fits at any --max-tokens: every prompt alone fills the context; use a model with a "
                      "longer one")
        if skip_too_long:  # none fits: every task would be scored as failed unrun
            raise GenerationFailed(f"--skip-too-long: none of the {len(requests)} tasks fits the context of {name} "
                                   f"at --max-tokens {requests[0].params.max_tokens}, so a score would be over no "
                                   f"generated task ({first}); {advice}")
        raise GenerationFailed(f"{len(bad)} of {len(requests)} generation requests cannot run on {name}: {first} "
                               f"({advice})")
    return too_long


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


def _remove_if_empty(partial, meta_path, n, created_dir, force=False):
    """Remove the partial file and its meta when they hold no finished task (or with `force`: only tasks skipped
    as too long), and the folder this run created when it is left empty (a failed run leaves nothing behind).
    Returns True when it removed them."""
    if not force and read_partial(partial, n):
        return False
    for path in (partial, meta_path):
        if os.path.exists(path):
            os.remove(path)
    if created_dir and os.path.isdir(created_dir) and not os.listdir(created_dir):
        os.rmdir(created_dir)
    return True


def skipped_record(task, style, completion_id, reason):
    """The samples-file record of a task not generated because its prompt + max_tokens exceed the context: an empty
    completion (other scorers fail it) marked `skipped` with the reason (megasnow's scorer fails it unrun)."""
    rec = sample_record(task, style, "", completion_id, "length")
    rec["skipped"] = reason
    return rec


def generate_samples(backend, benchmark, settings, out_path, progress=True, log=None, progress_interval=10.0,
                     identity=None, skip_too_long=False, advice=None):
    """Generate settings.n samples for every task of `benchmark` with `backend` into `out_path`.

    Returns a summary dict (counts, tokens, seconds, model, resumed_tasks, too_long_tasks). A task whose request
    fails is not written, so a rerun asks it again. `identity` (a flat dict; default: default_identity) is saved in
    identity_path(out_path) and must equal the saved one to resume a partial file (RunMismatch otherwise, with
    `advice` on what to do). skip_too_long: tasks whose requests exceed the model's context (refused up front, or
    answered with a context-length error) are written as `skipped` records (skipped_record), not failed.
    Raises GenerationFailed (a UserError) when requests are known to fail before generating (`precheck`) or when
    every request of the run failed (nothing is left behind then), and
    IncompleteGeneration (a UserError carrying the stats and the partial file) when only some failed: the finished
    tasks stay in `<out_path>.partial` and `out_path` is not written.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    start_backend = getattr(backend, "start", None)
    if start_backend is not None:
        start_backend()  # check URLs/keys and resolve the served model name before any file is written
    partial = out_path + ".partial"
    meta_path = identity_path(out_path)
    model = getattr(backend, "model_name", "")
    if identity is None:
        identity = default_identity(benchmark, settings, model, skip_too_long)
    check_identity(out_path, identity, advice or f"give another output, or delete {out_path} and {partial} to "
                                                 f"generate again", served=model)
    done = read_partial(partial, settings.n)
    todo = [(i, t) for i, t in enumerate(benchmark.tasks) if t.task_id not in done]
    generated_before = sum(not recs[0].get("skipped") for recs in done.values())
    too_long = precheck(backend, [build_request(t, settings.style, settings.params(i), f"{i}") for i, t in todo],
                        skip_too_long, generated_before)
    if done:
        log(f"resuming: {len(done)} of {len(benchmark.tasks)} tasks already generated in {partial}")
    if too_long:
        log(f"{len(too_long)} of {len(todo)} tasks do not fit the model's context "
            f"({context_tokens(next(iter(too_long.values()))) or '?'} tokens): not generated, scored as failed")
    folder = os.path.dirname(os.path.abspath(out_path))
    created_dir = None
    if not os.path.isdir(folder):
        created_dir = folder
        os.makedirs(folder)
    atomic_write_text(meta_path, json.dumps({**identity, SERVED_MODEL: model}, sort_keys=True) + "\n")
    stats = {"requests": 0, "samples": 0, "errors": 0, "completion_tokens": 0, "prompt_tokens": 0,
             "finish_reasons": {}, "error_kinds": {}, "first_error": None, "first_errors": {}}
    todo = [(i, t) for i, t in todo if f"{i}" not in too_long]  # (too_long's ids are those of todo's requests)
    first_failed = {}  # {error kind, or None for any: the lowest task index that failed with it}
    begin = time.monotonic()
    bar = _Progress(len(todo), log, progress_interval, enabled=progress)

    def write_skipped(out, task, reason):
        for j in range(settings.n):
            out.write(json.dumps(skipped_record(task, settings.style, j, reason), ensure_ascii=False) + "\n")

    try:
        with open(partial, "a", encoding="utf-8") as out:
            try:
                for rid, reason in too_long.items():
                    write_skipped(out, benchmark.tasks[int(rid)], reason)
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
                        if not result.ok and skip_too_long and is_context_length_error(result.error):
                            write_skipped(out, task, result.error)  # a server's 400 for the context length
                            out.flush()
                            continue
                        if not result.ok:
                            stats["errors"] += 1
                            kind = result.error_kind or "error"
                            stats["error_kinds"][kind] = stats["error_kinds"].get(kind, 0) + 1
                            # "first" in benchmark order (the lowest task index), not in completion order
                            message = f"{task.task_id}: {result.error}"
                            if i < first_failed.get(None, len(benchmark.tasks)):
                                first_failed[None], stats["first_error"] = i, message
                            if i < first_failed.get(kind, len(benchmark.tasks)):
                                first_failed[kind], stats["first_errors"][kind] = i, message
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
    skipped = [t.task_id for t in benchmark.tasks if t.task_id in done and done[t.task_id][0].get("skipped")]
    stats.update(seconds=time.monotonic() - begin, model=model,
                 resumed_tasks=len(benchmark.tasks) - len(todo) - len(too_long), failed_tasks=len(missing),
                 too_long_tasks=len(skipped), too_long_task_ids=skipped)
    if skip_too_long and benchmark.tasks and len(skipped) == len(benchmark.tasks):  # a server refused every one
        _remove_if_empty(partial, meta_path, settings.n, created_dir, force=True)
        raise GenerationFailed(f"--skip-too-long: none of the {len(benchmark.tasks)} tasks fits the model's context "
                               f"at --max-tokens {settings.max_tokens}, so a score would be over no generated task "
                               f"(first: {benchmark.tasks[0].task_id}: {done[benchmark.tasks[0].task_id][0]['skipped']}"
                               f"); lower --max-tokens, or use a model with a longer context")
    if missing and not done:
        _remove_if_empty(partial, meta_path, settings.n, created_dir)
        raise GenerationFailed(f"all {stats['requests']} generation requests failed: "
                               f"{stats['first_error'] or 'the backend returned no result'}; "
                               + failure_advice(stats, settings.style == "infill"))
    if missing:
        raise IncompleteGeneration(
            f"{len(missing)} of {len(benchmark.tasks)} tasks failed to generate (first: "
            f"{stats['first_error'] or missing[0] + ': the backend returned no result'}); the {len(done)} finished "
            f"are kept in {partial}; " + failure_advice(stats, settings.style == "infill"), stats, partial)
    total = write_samples(out_path, (rec for t in benchmark.tasks for rec in done[t.task_id]))
    os.remove(partial)  # the identity file stays beside the samples: a later run compares with it
    stats["samples_written"] = total
    return stats
