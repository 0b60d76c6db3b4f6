"""Infilling tasks generated from a benchmark's canonical solutions: the model writes a masked line (single-line) or
span of lines (multi-line) between the code before it and the code after it; the tests decide (pass@k), and the
masked text gives exact match.

No infilling benchmark ships offline (`human-eval-infilling` on PyPI is an empty package), so the tasks are built
here, deterministically, the way HumanEval-Infilling (Fried et al. 2022, InCoder; Bavarian et al. 2022) builds them:
single-line masks each non-blank line of each canonical solution (1033 tasks from HumanEval); multi-line masks each
span of one or more lines that starts and ends on a non-blank line (5815 tasks). `per_task` keeps a seeded subset.

A task's prompt is the prefix (the benchmark's prompt + the solution lines before the span), its canonical solution
the span without its last newline, and `suffix` that newline + the lines after. A sample's `completion` is the
middle: the program run is prompt + completion + suffix (+ the tests).
"""
import hashlib
from dataclasses import dataclass

from megasnow.errors import UserError
from megasnow.eval.tasks import Benchmark, Task

MODES = ("single-line", "multi-line")
PREFIXES = {"single-line": "SingleLineInfilling", "multi-line": "MultiLineInfilling"}


@dataclass
class InfillTask(Task):
    """A Task whose solution goes between `prompt` and `suffix`; `mode` and the masked lines [first, last] (0-based,
    inclusive, in the canonical solution) say where it came from; `source_task` is the original task id."""

    suffix: str = ""
    mode: str = ""
    first_line: int = 0
    last_line: int = 0
    source_task: str = ""

    def reference_program(self):
        return self.prompt + self.canonical_solution + self.suffix

    def program_for(self, sample):
        """A whole `solution` is run as given; a `completion` is the middle, run between prompt and suffix."""
        if sample.get("solution") is not None:
            code = sample["solution"]
        else:
            code = self.prompt + sample["completion"] + self.suffix
        return code if self.kind == "inputs" else code + "\n" + self.test

    @property
    def stop(self):
        """Stop sequences of a generated middle: a single-line middle ends at its newline."""
        return ("\n",) if self.mode == "single-line" else ()

    def exact_match(self, completion):
        """The middle equals the masked text (trailing whitespace aside; indentation counts)."""
        return completion.rstrip() == self.canonical_solution.rstrip()

    def fingerprint(self):
        h = hashlib.sha256(super().fingerprint().encode())
        h.update(f"\0{self.suffix}\0{self.mode}".encode())
        return h.hexdigest()


def spans(solution, mode):
    """(first, last) line spans of `solution` to mask, in order: see the module docstring."""
    lines = solution.splitlines(keepends=True)
    filled = [i for i, line in enumerate(lines) if line.strip()]
    if mode == "single-line":
        return [(i, i) for i in filled]
    return [(i, j) for a, i in enumerate(filled) for j in filled[a:]]


def infill_task(task, mode, first, last):
    """The InfillTask masking lines [first, last] of `task`'s canonical solution."""
    lines = task.canonical_solution.splitlines(keepends=True)
    middle = "".join(lines[first:last + 1])
    after = "".join(lines[last + 1:])
    if middle.endswith("\n"):  # the newline after the span belongs to the suffix: a single-line middle is one line
        middle, after = middle[:-1], "\n" + after
    span = f"L{first}" if first == last else f"L{first}_L{last}"
    return InfillTask(task_id=f"{PREFIXES[mode]}/{task.task_id}/{span}", prompt=task.prompt + "".join(lines[:first]),
                      entry_point=task.entry_point, canonical_solution=middle, kind=task.kind, test=task.test,
                      base_input=task.base_input, plus_input=task.plus_input, atol=task.atol, dataset=task.dataset,
                      source=task.source, extra=dict(task.extra), suffix=after, mode=mode, first_line=first,
                      last_line=last, source_task=task.task_id)


def infilling_benchmark(benchmark, mode, per_task=0, seed=0):
    """A Benchmark of InfillTasks from `benchmark`'s canonical solutions. per_task > 0 keeps that many spans of each
    task, chosen by a hash of (seed, task id, span): the same subset on every machine and run."""
    if mode not in MODES:
        raise UserError(f"infilling mode must be one of {MODES}, got {mode!r}")
    if per_task < 0:
        raise UserError(f"--infill-per-task must be >= 0, got {per_task}")
    tasks = []
    for task in benchmark.tasks:
        chosen = spans(task.canonical_solution, mode)
        if per_task and len(chosen) > per_task:
            def rank(span, task_id=task.task_id):
                return hashlib.sha256(f"{seed}\0{task_id}\0{span[0]}\0{span[1]}".encode()).digest()

            chosen = sorted(sorted(chosen, key=rank)[:per_task])
        tasks += [infill_task(task, mode, a, b) for a, b in chosen]
    if not tasks:
        raise UserError(f"{benchmark.path}: its canonical solutions have no non-blank line to mask")
    return Benchmark(f"{benchmark.name}-{mode}-infilling", benchmark.path, benchmark.schema, tasks)


def is_infilling(benchmark):
    return bool(benchmark.tasks) and isinstance(benchmark.tasks[0], InfillTask)


def add_exact_match(benchmark, samples, per_task, summary):
    """Exact match of the samples' middles: each task's share of exact samples (per-task record `exact_match`) and
    their mean over tasks (`summary['exact_match']`); a `solution` sample (a whole program) counts as not exact."""
    hits = {}
    for s in samples:
        task = benchmark.by_id[s.task_id]
        ok = s.solution is None and s.completion is not None and task.exact_match(s.completion)
        hits.setdefault(s.task_id, []).append(ok)
    for entry in per_task:
        got = hits.get(entry["task_id"], [])
        entry["exact_match"] = sum(got) / len(got) if got else 0.0
    scores = [sum(v) / len(v) for v in hits.values()]
    summary["exact_match"] = sum(scores) / len(scores) if scores else 0.0
    summary["infilling"] = {"mode": benchmark.tasks[0].mode, "tasks": len(benchmark.tasks),
                            "source_tasks": len({t.source_task for t in benchmark.tasks})}
    return summary
