"""Functional correctness of samples: run the canonical solutions once (outputs and seconds, cached), then every
sample against base and plus tests in the sandbox, with EvalPlus's time limits.

Time limits (EvalPlus, docs/execution.md): each test may take max(min_time_limit, gt_time_limit_factor x the
canonical solution's seconds on that test), so a slow machine does not fail correct code; the whole child is killed
at min(timeout_per_task, the sum of its tests' limits) + 1 s.
"""
import base64
import json
import os
import pickle
import sys
from dataclasses import asdict, dataclass

from megasnow.errors import UserError
from megasnow.eval.sandbox import ExecutionPool, Job, SandboxLimits, default_limits
from megasnow.utils.atomic import atomic_write_text

TRUTH_FORMAT = 1


class GroundTruthError(UserError, RuntimeError):
    """A canonical solution failing its own tests: a wrong benchmark file, or one needing what the sandbox forbids."""


@dataclass
class ExecutionConfig:
    """How samples run. workers: sandbox processes (default: one per core); min_time_limit, gt_time_limit_factor,
    timeout_per_task: EvalPlus's names and defaults (seconds); memory_mb / file_size_mb: per-child rlimits (memory
    defaults to EvalPlus's 4 GiB or the machine's memory); fast_check: stop a sample at its first failing input
    (EvalPlus without --test-details); truth_timeout: seconds for a canonical solution's whole run;
    cache_dir: where canonical outputs and seconds are kept between runs ('' for none)."""

    workers: int = 0
    min_time_limit: float = 4.0
    gt_time_limit_factor: float = 4.0
    timeout_per_task: float = 60.0
    memory_mb: int = 0
    file_size_mb: int = 16
    fast_check: bool = True
    truth_timeout: float = 300.0
    cache_dir: str = ""

    def __post_init__(self):
        for name in ("min_time_limit", "gt_time_limit_factor", "timeout_per_task", "truth_timeout"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.workers < 0 or self.memory_mb < 0 or self.file_size_mb < 0:
            raise UserError("workers, memory_mb and file_size_mb must be >= 0")

    def limits(self):
        if not self.memory_mb:
            return SandboxLimits(memory_bytes=default_limits().memory_bytes, file_size_bytes=self.file_size_mb << 20)
        return SandboxLimits(memory_bytes=self.memory_mb << 20, file_size_bytes=self.file_size_mb << 20)

    def pool(self):
        return ExecutionPool(workers=self.workers or None, limits=self.limits())


def default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "megasnow", "eval")


def _test_sets(task):
    if task.kind == "program":
        return ["base"]
    return ["base", "plus"] if task.has_plus else ["base"]


def _dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def ground_truth(benchmark, pool, cfg, progress=None):
    """{task_id: {test set: {"times": [s...], "outputs": base64 pickle or None}}}: the canonical solutions run in
    the sandbox (never in this process; their outputs stay pickled bytes here). Cached under cfg.cache_dir by the
    benchmark's fingerprint and this Python's version; GroundTruthError names a task whose solution fails."""
    key = f"{benchmark.fingerprint()[:32]}-py{sys.version_info[0]}{sys.version_info[1]}-v{TRUTH_FORMAT}"
    cache = os.path.join(cfg.cache_dir, "ground_truth", f"{key}.json") if cfg.cache_dir else None
    if cache and os.path.exists(cache):
        try:
            with open(cache, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            pass  # unreadable cache: recompute and rewrite it
    chains, where = [], []
    for i, task in enumerate(benchmark.tasks):
        path = ""
        if task.kind == "inputs":
            path = os.path.join(pool.tmp_root, f"truth-{i}.pkl")
            _dump(path, {s: {"inputs": getattr(task, f"{s}_input")} for s in _test_sets(task)})
        chain = []
        for s in _test_sets(task):
            n = len(getattr(task, f"{s}_input")) if task.kind == "inputs" else 1
            chain.append(Job(id=f"{task.task_id}/{s}", kind=task.kind, mode="truth", code=_truth_code(task),
                             entry_point=task.entry_point, data=path, test_set=s if path else "",
                             dataset=task.dataset, time_limits=[cfg.truth_timeout] * max(n, 1),
                             wall_seconds=cfg.truth_timeout, output_not_none=_output_not_none(task),
                             max_result_bytes=1 << 30))
        chains.append(chain)
        where.append(task)
    truth = {}
    for index, results in _progress(pool.run_chains(chains), len(chains), "canonical solutions", progress):
        task = where[index]
        sets = _test_sets(task)
        for s, res in zip(sets, results):
            if res["status"] != "passed":
                detail = ": ".join(x for x in (res.get("exception"), res.get("message")) if x)
                raise GroundTruthError(f"{task.source}: the canonical solution of {task.task_id} does not pass its "
                                       f"{s} tests in the sandbox ({res['status']}{': ' + detail if detail else ''}); "
                                       f"fix the benchmark file (or raise --memory-mb / --truth-timeout)")
            truth.setdefault(task.task_id, {})[s] = {"times": res["times"], "outputs": res.get("outputs")}
    if cache:
        atomic_write_text(cache, json.dumps(truth))
    return truth


def _truth_code(task):
    if task.kind == "inputs":
        return task.reference_program()
    return task.program_for({"completion": task.canonical_solution})


def _output_not_none(task):
    from megasnow.eval.sandbox_worker import MBPP_NOT_NONE

    return task.dataset == "mbpp" and task.entry_point in MBPP_NOT_NONE


def time_limits(times, cfg):
    """Per-test limits and the child's wall deadline (EvalPlus's rule)."""
    limits = [max(cfg.min_time_limit, cfg.gt_time_limit_factor * t) for t in times]
    wall = min(cfg.timeout_per_task, sum(limits)) + 1.0 + (0.0 if cfg.fast_check else 1.0)
    return limits, wall


def write_task_data(benchmark, truth, folder):
    """One pickle per inputs-kind task with its inputs, expected outputs (still pickled) and atol, for the workers."""
    paths = {}
    for i, task in enumerate(benchmark.tasks):
        if task.kind != "inputs":
            continue
        data = {}
        for s in _test_sets(task):
            data[s] = {"inputs": getattr(task, f"{s}_input"), "atol": task.atol,
                       "expected": base64.b64decode(truth[task.task_id][s]["outputs"])}
        paths[task.task_id] = os.path.join(folder, f"task-{i}.pkl")
        _dump(paths[task.task_id], data)
    return paths


def check_samples(benchmark, samples, pool, cfg, truth, progress=None):
    """Run every sample; returns one dict per sample (input order): task_id, completion_id, and per test set
    ('base', 'plus') its status (passed/failed/timeout/error, None when not run because base did not pass),
    exception type, message, failing input index, tests passed and seconds."""
    data_paths = write_task_data(benchmark, truth, pool.tmp_root)
    chains = []
    for sample in samples:
        task = benchmark.by_id[sample.task_id]
        code = task.program_for(sample.as_dict())
        chain = []
        for s in _test_sets(task):
            limits, wall = time_limits(truth[task.task_id][s]["times"], cfg)
            if task.kind == "program":
                limits = [min(limits[0], cfg.timeout_per_task)]
            chain.append(Job(id=f"{sample.task_id}/{sample.completion_id}/{s}", kind=task.kind, code=code,
                             entry_point=task.entry_point, data=data_paths.get(task.task_id, ""),
                             test_set=s if task.kind == "inputs" else "", dataset=task.dataset, time_limits=limits,
                             wall_seconds=wall, fast_check=cfg.fast_check))
        chains.append(chain)
    out = [None] * len(samples)
    for index, results in _progress(pool.run_chains(chains), len(chains), "samples", progress):
        sample = samples[index]
        task = benchmark.by_id[sample.task_id]
        rec = {"task_id": sample.task_id, "completion_id": sample.completion_id}
        for j, s in enumerate(_test_sets(task)):
            res = results[j] if j < len(results) else {}
            rec[f"{s}_status"] = res.get("status")
            for name in ("exception", "message", "input", "tests"):
                if res.get(name) is not None:
                    rec[f"{s}_{name}"] = res[name]
            if res:
                rec[f"{s}_seconds"] = round(res.get("wall", 0.0), 4)
        out[index] = rec
    return out


def _progress(items, total, what, progress):
    if progress is False:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=what, unit="program", file=sys.stderr, mininterval=2.0 if
                sys.stderr.isatty() else 20.0)


def config_dict(cfg):
    return asdict(cfg)
