"""Run a stage's tasks on local processes or on Ray; results come back in task order either way.

`fn(task)` must be a module-level (picklable) function that writes its own outputs atomically; callers skip
tasks whose outputs already exist, which is what makes a killed run resume.
"""
import atexit
import multiprocessing
import os
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from megasnow.utils.progress import Progress

_RAY_STARTED_HERE = False
_POOL = None  # (workers, ProcessPoolExecutor) kept across stages: worker start-up costs seconds


def run_tasks(fn, tasks, executor="local", workers=1, desc="stage", ray_address=None):
    """[fn(t) for t in tasks], computed on `workers` local processes or Ray workers.

    A task's exception is raised here as itself (on Ray too, not wrapped in RayTaskError); the other tasks are
    cancelled. Ctrl-C (KeyboardInterrupt) stops the worker processes at once: they ignore SIGINT themselves, so
    only this process reports it.
    """
    tasks = list(tasks)
    if not tasks:
        return []
    if executor == "local":
        return _run_local(fn, tasks, workers, desc)
    if executor == "ray":
        return _run_ray(fn, tasks, workers, desc, ray_address)
    raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")


def _run_local(fn, tasks, workers, desc):
    # megasnow's progress: a tqdm bar on a terminal, whole lines in a log file (no carriage returns)
    with Progress(total=len(tasks), desc=desc, unit="tasks") as bar:
        return _run_local_tasks(fn, tasks, workers, bar)


def _run_local_tasks(fn, tasks, workers, bar):
    if workers <= 1 or len(tasks) == 1:  # in-process: no start-up cost, easiest to debug
        results = []
        for t in tasks:
            results.append(fn(t))
            bar.update(1)
        return results
    results = [None] * len(tasks)
    pool = _local_pool(workers)
    pending = {pool.submit(fn, t): i for i, t in enumerate(tasks)}
    try:
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                results[pending.pop(fut)] = fut.result()
                bar.update(1)
    except KeyboardInterrupt:  # do not wait for the running tasks: stop their processes
        terminate_local_pool()
        raise
    except BaseException:
        for fut in pending:
            fut.cancel()
        raise
    return results


def _local_pool(workers):
    global _POOL
    if _POOL is None or _POOL[0] != workers:
        shutdown_local_pool()
        # forkserver: children do not inherit this process's threads (tqdm monitor, C++ pools)
        ctx = multiprocessing.get_context("forkserver")
        _POOL = (workers, ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_ignore_sigint))
    return _POOL[1]


def _ignore_sigint():
    """Pool workers leave Ctrl-C to the parent (which stops them), so the terminal shows one line, not a traceback
    per worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def terminate_local_pool():
    """Kill the pool's worker processes now (their unfinished outputs are temporaries, removed on resume)."""
    global _POOL
    if _POOL is None:
        return
    pool = _POOL[1]
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join(timeout=10)
    # the pool now sees its workers gone and fails the pending futures itself (cancelling them first races with
    # that in Python 3.11: InvalidStateError in its manager thread)
    pool.shutdown(wait=True)
    _POOL = None


def shutdown_local_pool():
    global _POOL
    if _POOL is not None:
        _POOL[1].shutdown(wait=True, cancel_futures=True)
        _POOL = None


def shutdown_executors():
    """Stop the worker processes this process started (local pool, local Ray)."""
    shutdown_local_pool()
    shutdown_ray()


def _call(fn, task):
    return fn(task)


def init_ray(workers, ray_address=None):
    """Start (or connect to) Ray with a small footprint: no dashboard, no usage stats, a 100 MB object store."""
    global _RAY_STARTED_HERE
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return ray
    if ray_address:
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=True)
    else:
        ray.init(num_cpus=max(1, workers), include_dashboard=False, object_store_memory=100 << 20,
                 log_to_driver=True, configure_logging=False)
        _RAY_STARTED_HERE = True
    return ray


def shutdown_ray():
    """Stop the local Ray instance if this process started it."""
    global _RAY_STARTED_HERE
    if _RAY_STARTED_HERE:
        import ray

        ray.shutdown()
        _RAY_STARTED_HERE = False


def _run_ray(fn, tasks, workers, desc, ray_address):
    ray = init_ray(workers, ray_address)
    remote_call = ray.remote(num_cpus=1, max_retries=0)(_call)  # any picklable callable, builtins included
    fn_ref = ray.put(fn)
    refs = [remote_call.remote(fn_ref, t) for t in tasks]
    index = {ref: i for i, ref in enumerate(refs)}
    results = [None] * len(tasks)
    pending = list(refs)
    with Progress(total=len(tasks), desc=desc, unit="tasks") as bar:
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    results[index[ref]] = ray.get(ref)
                    bar.update(1)
        except ray.exceptions.RayTaskError as e:
            for ref in pending:
                ray.cancel(ref, force=True)
            cause = getattr(e, "cause", None)
            if isinstance(cause, Exception):
                raise cause from e  # the task's own exception (e.g. CurationTaskError naming its shard)
            raise
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    return results


atexit.register(shutdown_local_pool)
