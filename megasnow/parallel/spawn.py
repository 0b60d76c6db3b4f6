"""Run a function on N local processes joined by a gloo (or NCCL) group, with a hard deadline.

Used by the multi-process tests and handy for quick experiments: a rank that raises makes the
whole run fail promptly with that rank's traceback, and a run that hangs is killed at the deadline.
"""
import datetime
import multiprocessing as mp
import os
import queue
import socket
import time
import traceback


class SpawnError(RuntimeError):
    """One rank failed or the run passed its deadline; the message holds the rank's traceback."""


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, backend, collective_timeout_s, fn, args, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world_size))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)
        dist.init_process_group(backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=collective_timeout_s))
        try:
            out = fn(rank, world_size, *args)
        finally:
            from megasnow.parallel import state

            state.destroy_model_parallel()
        results.put((rank, "ok", out))
        dist.destroy_process_group()
    except BaseException:
        results.put((rank, "error", traceback.format_exc()))


def run_processes(fn, world_size, args=(), timeout_s=180, backend="gloo", collective_timeout_s=60):
    """Call `fn(rank, world_size, *args)` on `world_size` spawned processes; return results by rank.

    `fn` must be importable (module level). Results must be picklable.
    """
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, world_size, port, backend, collective_timeout_s, fn, args, results),
                         daemon=True) for r in range(world_size)]
    for p in procs:
        p.start()
    outs, deadline = {}, time.monotonic() + timeout_s
    try:
        while len(outs) < world_size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SpawnError(f"distributed run passed its {timeout_s}s deadline; ranks finished: {sorted(outs)}")
            try:
                rank, status, payload = results.get(timeout=min(left, 1.0))
            except queue.Empty:
                dead = [i for i, p in enumerate(procs) if p.exitcode not in (None, 0) and i not in outs]
                if dead:
                    raise SpawnError(f"rank {dead[0]} died with exit code {procs[dead[0]].exitcode} without a result")
                continue
            if status == "error":
                raise SpawnError(f"rank {rank} failed:\n{payload}")
            outs[rank] = payload
    finally:
        for p in procs:
            p.join(timeout=5 if len(outs) == world_size else 0.5)
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    return [outs[r] for r in range(world_size)]
