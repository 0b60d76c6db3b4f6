"""Annotator training data: positives from JSONL/Parquet sources, random phase-1 negatives, held-out split.

Positives are high-quality code files (a text field) or instruction data (problem/solution fields,
formatted as one code document); negatives are drawn uniformly at random (reservoir sampling) from
phase-1 documents, as many as there are positives. Positives never contain evaluation benchmarks: each is
checked against HumanEval (always) and any user benchmark files with megasnow.curate's decontaminator, and a
match is dropped and reported (or refused). Every input goes through the shared shard reader
(megasnow.utils.records.read_shards): a damaged shard keeps its readable records and is reported, or with
`strict` stops the run.
"""
import hashlib
import json
import random
import os
import re
from dataclasses import dataclass, field

from megasnow.errors import UserError
from megasnow.quality.documents import check_document_text
from megasnow.utils.atomic import atomic_write
from megasnow.utils.records import ReadReport, RecordError, expand_inputs, iter_records, read_shards



class TrainingDataError(UserError, ValueError):
    """Training data that cannot make a balanced train/held-out split (a class missing, too few examples)."""


class BenchmarkLeakError(TrainingDataError):
    """Positives that match an evaluation benchmark, refused (on_benchmark_match="refuse")."""


_FENCE = re.compile(r"```[^\n`]*\n(.*?)```", re.DOTALL)


@dataclass
class PositiveSource:
    """One positive source: `kind` "code" reads `text_field`; "instruction" joins problem + solution."""

    paths: list = field(default_factory=list)
    kind: str = "code"
    text_field: str = "text"
    problem_field: str = "problem"
    solution_field: str = "solution"
    comment_prefix: str = "# "  # how the problem statement is written above the solution
    limit: int | None = None  # at most this many examples from this source (first ones, in file order)


@dataclass
class Example:
    text: str
    label: int  # 1 = high quality, 0 = random phase-1 document
    source: str = ""


def extract_code(solution):
    """The code of a solution: its fenced ``` blocks joined, or the whole text when it has none."""
    blocks = _FENCE.findall(solution)
    return "\n\n".join(b.strip("\n") for b in blocks) if blocks else solution


def format_instruction(problem, solution, comment_prefix="# "):
    """A problem/solution pair as one code document: the problem as a leading comment, then the code."""
    bare = comment_prefix.rstrip()
    header = "\n".join(comment_prefix + line if line.strip() else bare for line in problem.strip().splitlines())
    return f"{header}\n\n{extract_code(solution).strip()}\n"


def _record_text(source, rec, where):
    if source.kind == "code":
        if source.text_field not in rec:
            raise RecordError(f"{where}: no {source.text_field!r} field (keys: {sorted(rec)[:10]})")
        return rec[source.text_field]
    if source.kind == "instruction":
        for key in (source.problem_field, source.solution_field):
            if key not in rec:
                raise RecordError(f"{where}: no {key!r} field for instruction data (keys: {sorted(rec)[:10]})")
        problem, solution = rec[source.problem_field], rec[source.solution_field]
        if not isinstance(problem, str) or not isinstance(solution, str):
            return None
        if not extract_code(solution).strip():
            return ""  # counted as an empty positive
        return format_instruction(problem, solution, source.comment_prefix)
    raise ValueError(f"positive source kind must be 'code' or 'instruction', got {source.kind!r}")


def _report(report, skips):
    """The ReadReport to fill: `report`, or a new one whose skip log is `skips` (shared with the caller)."""
    if report is not None:
        return report
    return ReadReport(skips=skips) if skips is not None else ReadReport()


def load_positives(sources, skips=None, report=None, strict=False, on_damaged=None):
    """Positive Examples from every source, skipping (and counting) empty/binary/undecodable texts.

    Reading follows read_shards: damaged shards are kept up to the damage and listed in `report.damaged`
    (and passed to on_damaged), or raise ShardReadError with `strict`; malformed records are counted in
    the skips (RecordError with `strict`).
    """
    report = _report(report, skips)
    examples = []
    for source in sources:
        taken = 0
        for path, pos, rec in read_shards(source.paths, report, strict=strict, on_damaged=on_damaged):
            if source.limit is not None and taken >= source.limit:
                break
            text, reason = check_document_text(_record_text(source, rec, f"{path}:{pos}"))
            if reason:
                report.skips.add(f"positive {reason}", f"{path}:{pos}")
                continue
            examples.append(Example(text, 1, f"{path}:{pos}"))
            taken += 1
    return examples


def sample_negatives(inputs, count, seed, text_field="text", skips=None, exclude_keys=None, report=None,
                     strict=False, on_damaged=None):
    """`count` documents drawn uniformly at random from the phase-1 shards (reservoir sampling, seeded).

    Documents whose text_key is in `exclude_keys` are skipped (counted as "seen in training"). Damaged shards
    and malformed records: as in load_positives.
    """
    report = _report(report, skips)
    rng = random.Random(seed)
    reservoir, seen = [], 0
    for path, pos, rec in read_shards(inputs, report, strict=strict, on_damaged=on_damaged):
        text, reason = check_document_text(rec.get(text_field))
        if reason:
            report.skips.add(f"negative {reason}", f"{path}:{pos}")
            continue
        if exclude_keys is not None and text_key(text) in exclude_keys:
            report.skips.add("seen in training", f"{path}:{pos}")
            continue
        seen += 1
        if len(reservoir) < count:
            reservoir.append(Example(text, 0, f"{path}:{pos}"))
        else:
            j = rng.randrange(seen)
            if j < count:
                reservoir[j] = Example(text, 0, f"{path}:{pos}")
    return reservoir


def text_key(text):
    """64-bit identity of a text with whitespace runs collapsed: used for dedup and to recognise the
    texts an annotator was trained on (re-indenting or re-wrapping a text does not make it new)."""
    return int.from_bytes(hashlib.blake2b(" ".join(text.split()).encode("utf-8"), digest_size=8).digest(), "little")


def dedupe(examples):
    """Drop duplicate texts (same text_key; keeps the first), so no text sits in both train and held-out."""
    seen, out = set(), []
    for ex in examples:
        h = text_key(ex.text)
        if h not in seen:
            seen.add(h)
            out.append(ex)
    return out


def drop_cross_class(positives, negatives):
    """(positives, negatives, n): texts that occur in both classes removed from both; n = such texts.

    A random phase-1 file can be one of the positives (good code is on GitHub too). Labelled both ways
    it teaches nothing, and after the split it could sit in train as one class and in held-out as the other.
    """
    both = {text_key(e.text) for e in positives} & {text_key(e.text) for e in negatives}
    if not both:
        return positives, negatives, 0
    keep = lambda examples: [e for e in examples if text_key(e.text) not in both]  # noqa: E731
    return keep(positives), keep(negatives), len(both)


def balanced_split(positives, negatives, heldout_fraction=0.1, seed=0):
    """(train, heldout): equal positives and negatives (the larger side downsampled), stratified, shuffled."""
    if not positives or not negatives:
        raise TrainingDataError(f"need both classes: {len(positives)} usable positives, {len(negatives)} negatives; "
                                "check the input paths and text fields")
    if not 0.0 < heldout_fraction < 1.0:
        raise TrainingDataError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    rng = random.Random(seed)
    n = min(len(positives), len(negatives))
    pos, neg = rng.sample(positives, n), rng.sample(negatives, n)
    k = max(1, round(n * heldout_fraction))
    if k >= n:
        raise TrainingDataError(f"only {n} examples per class: too few for a held-out split of {heldout_fraction}")
    train, heldout = pos[k:] + neg[k:], pos[:k] + neg[:k]
    rng.shuffle(train)
    rng.shuffle(heldout)
    return train, heldout


BENCHMARK_MATCH_ACTIONS = ("drop", "refuse")


def benchmark_decontaminator(benchmarks=(), benchmark_key="--benchmark"):
    """megasnow.curate's Decontaminator over HumanEval (always: prompt and canonical_solution) and the user
    benchmark files `benchmarks` (JSONL/Parquet with task_id and prompt/canonical_solution/text/code fields), with
    curation's defaults: a normalized substring of at least 50 characters, or half of a field's word 10-grams.
    A missing or unusable benchmark file raises TrainingDataError (a UserError) naming it and `benchmark_key` (the
    flag or config key that gave it)."""
    from megasnow.curate.config import DecontaminationConfig
    from megasnow.curate.decontaminate import DecontaminationError, get_decontaminator

    for b in benchmarks:
        if not os.path.isfile(b):
            raise TrainingDataError(f"{benchmark_key}: {b!r} is not a file; check the path")
    try:
        return get_decontaminator(DecontaminationConfig(humaneval=True, benchmarks=[str(b) for b in benchmarks]))
    except DecontaminationError as e:  # its advice names curation's keys: name this caller's instead
        message = str(e).replace("decontamination.benchmarks", benchmark_key)
        message = message.replace("(set decontamination.text_fields)",
                                  "(the benchmark check reads prompt/canonical_solution/text/code: check the file "
                                  f"given to {benchmark_key})")
        message = message.replace("(set decontamination.id_field)", f"(each {benchmark_key} record needs a task_id)")
        raise TrainingDataError(message) from None


def decontaminate_positives(positives, benchmarks=(), on_benchmark_match="drop", benchmark_key="--benchmark"):
    """(clean positives, matches): each positive Example checked against HumanEval and `benchmarks`.

    Held-out benchmark solutions are for measuring an annotator's alignment only; as positives they would teach it
    to select the benchmark itself and contaminate every later benchmark figure. matches: one dict per dropped
    positive, {"source": "file:line", "benchmark", "task_id", "field", "mode"} (its first match).
    on_benchmark_match: "drop" removes them; "refuse" raises BenchmarkLeakError naming the first ones.
    """
    if on_benchmark_match not in BENCHMARK_MATCH_ACTIONS:
        raise ValueError(f"on_benchmark_match must be one of {BENCHMARK_MATCH_ACTIONS}, got {on_benchmark_match!r}")
    decon = benchmark_decontaminator(benchmarks, benchmark_key)
    clean, matches = [], []
    for ex in positives:
        hits = decon.match(ex.text)
        if hits:
            matches.append({"source": ex.source, **hits[0]})
        else:
            clean.append(ex)
    if matches and on_benchmark_match == "refuse":
        first = "; ".join(f"{m['source']} matches {m['benchmark']} {m['task_id']} ({m['field']}, {m['mode']})"
                          for m in matches[:3])
        raise BenchmarkLeakError(f"{len(matches)} of {len(positives)} positives match evaluation benchmarks ({first}"
                                 f"{'; ...' if len(matches) > 3 else ''}): benchmark solutions are for measuring "
                                 "alignment only; remove them from the positives (or drop them: on_benchmark_match="
                                 "'drop', annotate.py train --on-benchmark-match drop)")
    return clean, matches


def summarize_matches(matches, examples=5):
    """The stats entry for dropped benchmark matches: count, per-benchmark task counts, the first sources."""
    per = {}
    for m in matches:
        per.setdefault(m["benchmark"], set()).add(m["task_id"])
    return {"dropped": len(matches), "tasks": {b: len(t) for b, t in sorted(per.items())},
            "examples": [f"{m['source']}: {m['benchmark']} {m['task_id']}" for m in matches[:examples]]}


def build_training_set(sources, negative_inputs, heldout_fraction=0.1, seed=0, negative_text_field="text",
                       strict=False, on_damaged=None, benchmarks=(), on_benchmark_match="drop",
                       benchmark_key="--benchmark"):
    """(train, heldout, stats) from positive sources and phase-1 negatives, balanced and deduplicated
    (within each class and across the two: a text found in both is dropped from both). Damaged input shards
    are listed in stats["damaged_shards"] (strict: ShardReadError).

    Positives matching HumanEval or a file of `benchmarks` are dropped and counted in stats["benchmark_matches"]
    ({"dropped", "tasks", "examples"}), or with on_benchmark_match="refuse" raise BenchmarkLeakError
    (decontaminate_positives)."""
    report = ReadReport()
    skips = report.skips
    benchmark_decontaminator(benchmarks, benchmark_key)  # a bad benchmark file fails before the inputs are read
    positives = dedupe(load_positives(sources, report=report, strict=strict, on_damaged=on_damaged))
    if not positives:
        files = [f for src in sources for f in expand_inputs(src.paths)]
        skipped = "; ".join(f"{n} {reason}" for reason, n in sorted(skips.counts.items()) if "positive" in reason)
        raise TrainingDataError(f"no usable positives in {', '.join(files[:5])}{' ...' if len(files) > 5 else ''}"
                                f"{f' (skipped: {skipped})' if skipped else ' (no records)'}: negatives are sampled "
                                "to match the positives, so there is nothing to train on; check the positive files "
                                "and their text field")
    positives, matches = decontaminate_positives(positives, benchmarks, on_benchmark_match, benchmark_key)
    if not positives:
        raise TrainingDataError(f"every positive ({len(matches)}) matches an evaluation benchmark and was dropped: "
                                "nothing is left to train on; give positives that are not benchmark solutions")
    negatives = dedupe(sample_negatives(negative_inputs, len(positives), seed, negative_text_field, report=report,
                                        strict=strict, on_damaged=on_damaged))
    positives, negatives, in_both = drop_cross_class(positives, negatives)
    train, heldout = balanced_split(positives, negatives, heldout_fraction, seed)
    stats = {
        "positives_available": len(positives),
        "negatives_sampled": len(negatives),
        "in_both_classes_dropped": in_both,
        "benchmark_matches": summarize_matches(matches),
        "train": len(train),
        "heldout": len(heldout),
        "skipped": dict(skips.counts),
        "damaged_shards": [vars(d) for d in report.damaged],
    }
    return train, heldout, stats


def write_examples(path, examples):
    with atomic_write(path, "w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps({"text": ex.text, "label": ex.label, "source": ex.source}, ensure_ascii=False) + "\n")


def read_examples(path):
    """Examples from a JSONL/Parquet file with "text" and "label" (0/1) fields."""
    out = []
    for pos, rec in iter_records(path, strict=True):
        if rec.get("label") not in (0, 1) or not isinstance(rec.get("text"), str):
            raise RecordError(f"{path}:{pos}: expected a string 'text' and a 0/1 'label'")
        out.append(Example(rec["text"], int(rec["label"]), rec.get("source", f"{path}:{pos}")))
    return out
