"""Seeds for synthesis: the top-scored phase-2 documents, per-language quotas, and the snippet each request shows.

Quotas: Python gets `python_fraction` of the seeds, the other languages share the rest in their phase-1
proportions (curate stats.json or selection_report.json; else the mix of the seed documents). Each language takes
its best-scored documents first. Snippets: OSS-Instruct's min..max consecutive lines from a random point of a
random file of the document ("lines"), or the document's first file up to N tokens ("head"). Every random choice
is seeded by (seed, document, occurrence), so the same config gives the same seeds in any order of work.
"""
import hashlib
import json
import math
import os
import random
import re
from dataclasses import dataclass

from tqdm import tqdm

from megasnow.curate.languages import canonical_language
from megasnow.data.special_tokens import FILE_SEP, REPO_NAME
from megasnow.errors import UserError
from megasnow.utils.cli import warn
from megasnow.utils.records import ReadReport, expand_inputs, iter_records, read_shards

_WORDS = re.compile(r"\w+|[^\w\s]")
SNIPPET_TRIES = 10  # random points tried before settling for the first non-blank lines of the file


@dataclass(frozen=True)
class Seed:
    """One seed: `seed_id` = "<document id>#<occurrence>", the snippet `text`, its language and where it came from."""

    seed_id: str
    doc_id: str
    lang: str
    text: str
    source: str  # "path:line" (JSONL) or "path:row" (Parquet)
    score: float = None


def split_document(text):
    """[(path, content)] of a curated repo document (`<repo_name>repo<file_sep>path\\ncode...`); a text without
    the markers is one file with path ''."""
    if FILE_SEP not in text and not text.startswith(REPO_NAME):
        return [("", text)]
    files = []
    for piece in text.split(FILE_SEP)[1:]:
        path, _, content = piece.partition("\n")
        files.append((path, content))
    return files


def load_language_weights(path):
    """{lang: phase-1 weight} from curate's stats.json (document bytes) or a selection_report.json (tokens)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"seeds.language_stats: cannot read {path}: {e}") from None
    if isinstance(data.get("languages"), dict):  # selection_report.json
        return {lang: float(v.get("phase1_tokens", 0)) for lang, v in data["languages"].items()}
    stages = data.get("stages") if isinstance(data, dict) else None
    if isinstance(stages, dict):  # curate stats.json: bytes of the finished documents (last stage present)
        for stage in ("documents", "decontaminate", "filter", "ingest"):
            if stage in stages:
                return {lang: float(c.get("bytes_out", 0)) for lang, c in stages[stage].items() if lang != "all"}
    raise UserError(f"seeds.language_stats: {path} is neither a curate stats.json nor a selection_report.json")


def language_shares(present, weights, python_fraction):
    """{lang: target share} over `present` languages: Python `python_fraction`, the rest by `weights`."""
    others = [lang for lang in present if lang != "python"]
    total_other = sum(weights.get(lang, 0.0) for lang in others)
    shares = {}
    if "python" in present:
        shares["python"] = python_fraction if others and total_other > 0 else 1.0
    rest = 1.0 - shares.get("python", 0.0)
    for lang in others:
        shares[lang] = rest * weights.get(lang, 0.0) / total_other if total_other > 0 else 0.0
    return shares


def largest_remainder(shares, total):
    """Integer counts summing to `total`, proportional to `shares` (Hamilton's method; ties by language name)."""
    raw = {k: v * total for k, v in shares.items()}
    counts = {k: int(math.floor(v)) for k, v in raw.items()}
    left = total - sum(counts.values())
    for k in sorted(raw, key=lambda k: (-(raw[k] - counts[k]), k))[:max(0, left)]:
        counts[k] += 1
    return counts


class TokenCounter:
    """Tokens of a line: the project tokenizer when given, else words and single symbols (an approximation)."""

    def __init__(self, tokenizer_path=None):
        self.tokenizer = None
        if tokenizer_path:
            from megasnow.data.tokenizer import load_tokenizer

            self.tokenizer = load_tokenizer(tokenizer_path)

    def __call__(self, text):
        if self.tokenizer is not None:
            return len(self.tokenizer.encode(text))
        return len(_WORDS.findall(text))


def _rng(seed, doc_key, occurrence):
    digest = hashlib.sha256(f"{seed}\0{doc_key}\0{occurrence}".encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def lines_snippet(text, rng, min_lines, max_lines):
    """min..max consecutive lines from a random point of a random non-blank file of the document."""
    files = [content for _, content in split_document(text) if content.strip()]
    if not files:
        return ""
    lines = rng.choice(files).rstrip("\n").split("\n")
    for _ in range(SNIPPET_TRIES):
        n = min(rng.randint(min_lines, max_lines), len(lines))
        start = rng.randint(0, len(lines) - n)
        snippet = "\n".join(lines[start:start + n])
        if snippet.strip():
            return snippet.rstrip()
    first = next(i for i, line in enumerate(lines) if line.strip())
    return "\n".join(lines[first:first + max_lines]).rstrip()


def head_snippet(text, max_tokens, count_tokens):
    """The first non-blank file of the document, whole lines while they fit in `max_tokens` tokens."""
    files = [content for _, content in split_document(text) if content.strip()]
    if not files:
        return ""
    out, used = [], 0
    for line in files[0].split("\n"):
        n = count_tokens(line) + 1  # + the newline
        if used + n > max_tokens:
            if not out:  # one over-long first line: keep a prefix of it (~4 characters per token)
                out.append(line[: 4 * max_tokens])
            break
        out.append(line)
        used += n
    return "\n".join(out).rstrip()


@dataclass
class _Candidate:
    lang: str
    score: float
    order: int
    path: str
    pos: int
    doc_id: str


def _score_maps(cfg):
    """{document shard path: scores file} for seeds.scores (the layout annotate.py score writes)."""
    if not cfg.scores:
        return {}
    from megasnow.quality.score import plan_score_tasks

    tasks, todo = plan_score_tasks(cfg.documents, cfg.scores, annotator_path="")
    if todo:
        raise UserError(f"seeds.scores: {len(todo)} document shard(s) have no scores file in {cfg.scores} "
                        f"(e.g. {todo[0].input_path}); run `tools/annotate.py score` first")
    return {t.input_path: t.output_path for t in tasks}


def _read_scores(path):
    scores = {}
    for _, row in iter_records(path, strict=True):
        scores[row["pos"]] = row.get("score")
    return scores


def scan_candidates(cfg, report, progress=True, fields=None):
    """Pass 1: (language, score, position) of every usable seed document; bad records counted in `report`.
    `fields`: a dict that receives {field name: records having it} over the first records (for error messages)."""
    score_files = _score_maps(cfg)
    wanted = {canonical_language(lang) or lang for lang in cfg.languages}
    cands, current, scores = [], None, {}
    records = read_shards(cfg.documents, report, on_damaged=lambda d: warn(d.describe()))
    # leave=True: the closing line keeps the count read (a log shows the bar's first frame, "0doc", otherwise)
    for path, pos, rec in tqdm(records, desc="seed documents", unit="doc", disable=not progress, mininterval=5):
        where = f"{path}:{pos}"
        if fields is not None and report.records <= FIELD_SAMPLE:
            for k in rec:
                fields[k] = fields.get(k, 0) + 1
        if score_files and path != current:
            current, scores = path, _read_scores(score_files[os.path.abspath(path)])
        text = rec.get(cfg.text_field)
        if not isinstance(text, str) or not text.strip():
            report.skips.add(f"no text in field {cfg.text_field!r}", where)
            continue
        lang = canonical_language(rec.get(cfg.lang_field))
        if lang is None:
            report.skips.add(f"unknown language in field {cfg.lang_field!r}: {rec.get(cfg.lang_field)!r}", where)
            continue
        if wanted and lang not in wanted:
            continue
        score = scores.get(pos) if score_files else rec.get(cfg.score_field)
        if score_files and score is None:
            report.skips.add("no score (skipped by the annotator)", where)
            continue
        doc_id = rec.get(cfg.id_field)
        doc_id = str(doc_id) if doc_id is not None else f"{os.path.basename(path)}:{pos}"
        cands.append(_Candidate(lang, float(score) if isinstance(score, (int, float)) else None, len(cands),
                                path, pos, doc_id))
    return cands


FIELD_SAMPLE = 1000  # records whose field names an error about the *_field keys may list


def _what_to_change(cfg, fields, report):
    """The tail of the no-usable-seeds error: which key to change (seeds.text_field / lang_field / languages),
    with the fields the records have."""
    if not report.records:
        return ""
    reasons = " ".join(report.skips.counts)
    have = ", ".join(sorted(fields, key=lambda k: (-fields[k], k))[:12]) or "none"
    tips = []
    if cfg.text_field not in fields:
        tips.append(f"seeds.text_field is {cfg.text_field!r}, which no record has")
    if cfg.lang_field not in fields:
        tips.append(f"seeds.lang_field is {cfg.lang_field!r}, which no record has")
    elif "unknown language" in reasons:
        tips.append(f"seeds.lang_field {cfg.lang_field!r} holds no language name megasnow knows")
    if not tips and cfg.languages and not report.skips.total:
        return f"; none is in seeds.languages {cfg.languages}: widen it (or leave it empty for all)"
    if not tips and "no score" in reasons:
        return ("; no record has a score in seeds.scores: check that it is the annotator's score folder of these "
                "documents")
    if not tips:
        tips.append(f"check seeds.text_field ({cfg.text_field!r}) and seeds.lang_field ({cfg.lang_field!r})")
    return f"; {' and '.join(tips)}: set them to the records' fields ({have})"


@dataclass
class SeedPlan:
    """The chosen seeds (interleaved across languages) and the language targets they were chosen for."""

    seeds: list
    target: dict  # lang -> seeds wanted
    available: dict  # lang -> seed documents found
    shares: dict  # lang -> target share
    read: dict  # read_shards summary (files, records, skipped with file:line examples)


def plan_seeds(cfg, progress=True):
    """Read the seed documents and choose `cfg.num_seeds` seeds (see the module docstring)."""
    report, fields = ReadReport(), {}
    cands = scan_candidates(cfg, report, progress, fields)
    for example in report.skips.examples:
        warn(f"seed record skipped: {example}")
    if not cands:
        raise UserError(f"seeds.documents: no usable seed documents in {cfg.documents} ({report.records} records "
                        f"read, {report.skips.total} skipped){_what_to_change(cfg, fields, report)}")
    by_lang = {}
    for c in cands:
        by_lang.setdefault(c.lang, []).append(c)
    present = sorted(by_lang)
    if cfg.language_stats:
        weights = load_language_weights(cfg.language_stats)
        missing = [lang for lang in present if lang != "python" and not weights.get(lang)]
        if missing:
            warn(f"seeds.language_stats {cfg.language_stats} gives no phase-1 share to {', '.join(missing)}; "
                 f"they get no seeds")
    else:
        weights = {lang: float(len(v)) for lang, v in by_lang.items()}
    shares = language_shares(present, weights, cfg.python_fraction)
    target = largest_remainder(shares, cfg.num_seeds)
    chosen = []  # (interleave key, candidate, occurrence)
    for lang in present:
        ranked = sorted(by_lang[lang], key=lambda c: (c.score is None, -(c.score or 0.0), c.order))
        want = target.get(lang, 0)
        if cfg.mode == "head":
            want = min(want, len(ranked))  # a document has one head: no repeats
        for i in range(want):
            chosen.append(((i + 0.5) / max(1, target[lang]), lang, ranked[i % len(ranked)], i // len(ranked)))
    chosen.sort(key=lambda t: (t[0], t[1]))
    seeds = _extract(cfg, [(c, occ) for _, _, c, occ in chosen], report)
    return SeedPlan(seeds=seeds, target=target, available={k: len(v) for k, v in by_lang.items()},
                    shares=shares, read=report.summary())


def _extract(cfg, picks, report):
    """Pass 2: read the picked documents again (only those) and cut their snippets. Each file is read up to its
    last picked record, so a damaged shard (pass 1 kept the records before the damage) is not read past it."""
    wanted = {}
    for c, _ in picks:
        wanted.setdefault(c.path, set()).add(c.pos)
    texts = {}
    for path in sorted(wanted):
        last = max(wanted[path])
        for pos, rec in iter_records(path):
            if pos in wanted[path]:
                texts[(path, pos)] = rec[cfg.text_field]
            if pos >= last:
                break
    counter = TokenCounter(cfg.tokenizer) if cfg.mode == "head" else None
    seeds = []
    for c, occ in picks:
        text = texts[(c.path, c.pos)]
        if cfg.mode == "head":
            snippet = head_snippet(text, cfg.head_tokens, counter)
        else:
            snippet = lines_snippet(text, _rng(cfg.seed, c.doc_id, occ), cfg.min_lines, cfg.max_lines)
        if not snippet.strip():
            report.skips.add("document has no non-blank file", f"{c.path}:{c.pos}")
            continue
        seeds.append(Seed(seed_id=f"{c.doc_id}#{occ}", doc_id=c.doc_id, lang=c.lang, text=snippet,
                          source=f"{c.path}:{c.pos}", score=c.score))
    return seeds


def check_inputs(cfg, names=None):
    """Fail at start-up (UserError naming the flag or key) when an input path of the seeds section names nothing:
    documents, scores, language_stats, tokenizer. `names` maps a key (e.g. "seeds.documents") to what the user
    typed instead (e.g. "--seeds") where it came from a flag."""
    names = names or {}

    def name(key):
        return names.get(key, key)

    if not cfg.documents:
        raise UserError("seeds.documents is empty: give the phase-2 documents (e.g. the selection output folder) "
                        "with --seeds or seeds.documents=[...]")
    try:
        expand_inputs(cfg.documents)
    except UserError as e:
        raise UserError(f"{name('seeds.documents')}: {e}") from None
    if cfg.scores and not os.path.isdir(cfg.scores):
        raise UserError(f"{name('seeds.scores')}: {cfg.scores} is not a folder (give the output folder of "
                        f"`tools/annotate.py score`, or null)")
    if cfg.language_stats and not os.path.isfile(cfg.language_stats):
        raise UserError(f"{name('seeds.language_stats')}: {cfg.language_stats} is not a file (give curate's "
                        f"stats.json or a selection_report.json, or null)")
    if cfg.mode == "head" and cfg.tokenizer and not os.path.exists(cfg.tokenizer):
        raise UserError(f"{name('seeds.tokenizer')}: {cfg.tokenizer} does not exist (give a SentencePiece .model "
                        f"or a tokenizer.json, or null)")
