"""Run per-shard quality tasks through the curation executor (local processes or Ray).

Thin wrapper over `megasnow.curate.executors.run_tasks`, so scoring and selection shard exactly
like the phase-1 curation stages; a plain in-process loop is used for one local worker.
"""


def run_shard_tasks(fn, tasks, executor="local", workers=1, desc="tasks", ray_address=None):
    """Results of fn(task) for every task, in task order."""
    if not tasks:
        return []
    if executor == "local" and workers <= 1:
        # One worker: stay in this process (keeps the encoder loaded once, and tests cheap).
        return [fn(t) for t in tasks]
    from megasnow.curate.executors import run_tasks

    return run_tasks(fn, tasks, executor=executor, workers=workers, desc=desc, ray_address=ray_address)
