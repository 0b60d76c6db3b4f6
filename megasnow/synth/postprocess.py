"""Turn cached responses into training documents, counting every drop by reason and language.

Checks, in order (the first one an output fails is its reason): finish_reason_<x> (not 'stop'), no_code_block /
unclosed_code_block / wrong_language / empty_code_block (extract.py), syntax_error (syntax.py), too_short (fewer
than min_lines non-blank lines or min_chars non-whitespace characters: a fragment, which the StarCoder filters let
through), copies_seed
(word n-gram overlap with the seed), filter_<name> (StarCoder filters of megasnow.curate), contaminated (benchmark
decontamination of megasnow.curate), duplicate_exact / duplicate_near (among outputs, earliest kept),
reference_exact / reference_near (a file of the phase-1/2 corpus). Requests never answered count as not_answered.
"""
import glob
import os

import orjson
from tqdm import tqdm

from megasnow.curate.decontaminate import get_decontaminator
from megasnow.curate.documents import repo_documents
from megasnow.curate.filters import filter_reason, resolve_filter_config
from megasnow.curate.languages import LANGUAGE_EXTENSIONS
from megasnow.curate.minhash import shingle_set, sorted_intersection_size
from megasnow.synth.dedup import ReferenceIndex, exact_duplicates, near_duplicates
from megasnow.synth.extract import select_code
from megasnow.synth.syntax import syntax_error
from megasnow.utils.atomic import atomic_write
from megasnow.utils.cli import warn
from megasnow.utils.records import ReadReport

DATA_DIR = "data"
DROPPED_FILE = "dropped.jsonl"


def seed_overlap(code, seed, ngram):
    """Fraction of the output's distinct word n-grams that also occur in the seed (0 for an output with no words)."""
    out = shingle_set(code, ngram)
    if len(out) == 0:
        return 0.0
    return sorted_intersection_size(out, shingle_set(seed, ngram)) / len(out)


def code_size(code):
    """{"lines": non-blank lines, "chars": non-whitespace characters} of `code` (what too_short measures)."""
    return {"lines": sum(1 for line in code.splitlines() if line.strip()), "chars": len("".join(code.split()))}


def too_short(code, min_lines, min_chars):
    """Whether `code` has fewer than `min_lines` non-blank lines or `min_chars` non-whitespace characters (0: that
    bound is off): too small to be a useful pretraining document, e.g. two lines cut out of a function."""
    size = code_size(code)
    return bool(min_lines) and size["lines"] < min_lines or bool(min_chars) and size["chars"] < min_chars


def file_extension(lang):
    """The extension of an output's path (notebook-language outputs are scripts)."""
    return ".py" if lang == "jupyter" else LANGUAGE_EXTENSIONS.get(lang, [""])[0]


class Tally:
    """Per-language counters: requests, answered, outputs, kept and dropped by reason (plus a few examples)."""

    def __init__(self):
        self.langs = {}
        self.notes = {}

    def lang(self, lang):
        return self.langs.setdefault(lang, {"requests": 0, "answered": 0, "outputs": 0, "kept": 0, "dropped": {},
                                            "prompt_tokens": 0, "completion_tokens": 0, "kept_completion_tokens": 0})

    def drop(self, lang, reason):
        d = self.lang(lang)["dropped"]
        d[reason] = d.get(reason, 0) + 1

    def note(self, name):
        self.notes[name] = self.notes.get(name, 0) + 1

    def totals(self):
        total = {"requests": 0, "answered": 0, "outputs": 0, "kept": 0, "dropped": {}, "prompt_tokens": 0,
                 "completion_tokens": 0, "kept_completion_tokens": 0}
        for c in self.langs.values():
            for k, v in c.items():
                if k == "dropped":
                    for r, n in v.items():
                        total["dropped"][r] = total["dropped"].get(r, 0) + n
                else:
                    total[k] += v
        return total


def dropped_entry(out_id, planned, reason, detail=None):
    """One line of dropped.jsonl: the output's id, the reason and its detail, and what traces it back: the request
    index (its position in the plan; its shard is index % num_shards), the sample, the seed's id and source
    (FILE:RECORD of the seed document)."""
    seed = planned.seed
    return {"id": out_id, "lang": seed.lang, "reason": reason, "detail": detail, "request_index": planned.index,
            "sample": planned.sample, "seed_id": seed.seed_id, "seed_source": seed.source}


def first_checks(planned, answered, cfg, template, tally, dropped, progress=False):
    """Per-output checks (finish reason .. decontamination); returns the surviving candidates in request order."""
    pp = cfg.postprocess
    decon = get_decontaminator(pp.decontamination) if pp.decontamination.enabled else None
    survivors = []
    for p in tqdm(planned, desc="post-process", unit="req", disable=not progress, mininterval=5):
        lang = p.seed.lang
        counts = tally.lang(lang)
        counts["requests"] += 1
        rec = answered.get(p.id)
        if rec is None:
            tally.drop(lang, "not_answered")
            continue
        counts["answered"] += 1
        counts["prompt_tokens"] += rec.get("prompt_tokens") or 0
        counts["completion_tokens"] += rec.get("completion_tokens") or 0
        many = len(rec["choices"]) > 1
        for ci, choice in enumerate(rec["choices"]):
            counts["outputs"] += 1
            out_id = f"{p.id}-{ci}" if many else p.id

            def reject(reason, detail=None):
                tally.drop(lang, reason)
                dropped.append(dropped_entry(out_id, p, reason, detail))

            finish = choice.get("finish_reason") or "none"
            if pp.require_stop and finish != "stop":
                reject(f"finish_reason_{finish}")
                continue
            code, reason, matched = select_code(template.full_answer(choice.get("text") or "", lang), lang)
            if reason:
                reject(reason)
                continue
            if matched > 1:
                tally.note("several_blocks_took_longest")
            if pp.syntax_check:
                ok, detail = syntax_error(code, lang)
                if ok is False:
                    reject("syntax_error", detail)
                    continue
                if ok is None:
                    tally.note(f"syntax_unchecked_{lang}")
            if too_short(code, pp.min_lines, pp.min_chars):
                reject("too_short", code_size(code))
                continue
            overlap = seed_overlap(code, p.seed.text, pp.seed_copy_ngram)
            if overlap >= pp.seed_copy_threshold:
                reject("copies_seed", round(overlap, 3))
                continue
            if pp.filters.enabled:
                # the language's own first extension: the outputs pass the extension whitelist by construction
                ext = LANGUAGE_EXTENSIONS.get(lang, [""])[0]
                why = filter_reason(code, lang, ext, resolve_filter_config(pp.filters, lang))
                if why is not None:
                    reject(f"filter_{why}")
                    continue
            if decon is not None:
                hits = decon.match(code)
                if hits:
                    reject("contaminated", sorted({f"{h['benchmark']}/{h['task_id']}" for h in hits}))
                    continue
            survivors.append({"id": out_id, "planned": p, "record": rec, "choice": choice, "code": code})
    return survivors


def dedup_checks(survivors, cfg, tally, dropped, read_report):
    """Exact and near duplicates among the survivors, then against the reference corpus; returns the kept ones."""
    pp = cfg.postprocess
    steps = []
    if pp.exact_dedup:
        steps.append(("duplicate_exact", lambda codes: exact_duplicates(codes)))
    if pp.near_dedup.enabled:
        steps.append(("duplicate_near", lambda codes: near_duplicates(codes, pp.near_dedup)))
    if pp.reference:
        ref = ReferenceIndex(pp.reference, pp.reference_text_field, pp.near_dedup, read_report,
                             on_damaged=lambda d: warn(d.describe()))
        tally.notes["reference_files"] = ref.files
        steps.append(("reference_exact", ref.exact_matches))
        if pp.near_dedup.enabled:
            steps.append(("reference_near", ref.near_matches))
    for reason, find in steps:
        if not survivors:
            break
        removed = find([s["code"] for s in survivors])
        kept = []
        for s, gone in zip(survivors, removed.tolist()):
            if gone:
                tally.drop(s["planned"].seed.lang, reason)
                dropped.append(dropped_entry(s["id"], s["planned"], reason))
            else:
                kept.append(s)
        survivors = kept
    return survivors


def to_document(s, cfg, template):
    """A kept output in the curated-document format, with its provenance."""
    p, rec, choice = s["planned"], s["record"], s["choice"]
    lang = p.seed.lang
    path = f"synth/{s['id'][:16]}{file_extension(lang)}"
    if cfg.output.format == "document":
        doc = repo_documents([{"path": path, "content": s["code"], "id": s["id"]}], lang, cfg.output.repo_name,
                             seed=0, max_chars=float("inf"))[0]
    else:
        doc = {"text": s["code"], "lang": lang, "paths": [path]}
    doc["id"] = s["id"]
    sp = p.params
    doc["provenance"] = {
        "request_id": p.id, "request_index": p.index, "seed_id": p.seed.seed_id, "seed_source": p.seed.source,
        "seed_score": p.seed.score, "model": rec.get("model"), "template": template.name,
        "template_sha": template.sha, "style": template.style,
        "sampling": {"max_tokens": sp.max_tokens, "temperature": sp.temperature, "top_p": sp.top_p,
                     "stop": list(sp.stop), "seed": sp.seed, "sample": p.sample},
        "system_fingerprint": rec.get("system_fingerprint"), "finish_reason": choice.get("finish_reason"),
        "completion_tokens": choice.get("completion_tokens") or rec.get("completion_tokens"),
    }
    return doc


def write_outputs(docs, dropped, output, shard_docs):
    """data/part-NNNNN.jsonl shards (atomic; parts of an earlier, larger run removed) and dropped.jsonl."""
    folder = os.path.join(output, DATA_DIR)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for k, a in enumerate(range(0, len(docs), shard_docs)):
        path = os.path.join(folder, f"part-{k:05d}.jsonl")
        with atomic_write(path, "wb") as f:
            for d in docs[a:a + shard_docs]:
                f.write(orjson.dumps(d) + b"\n")
        paths.append(path)
    for old in glob.glob(os.path.join(glob.escape(folder), "part-*.jsonl")):
        if old not in paths:
            os.unlink(old)
    with atomic_write(os.path.join(output, DROPPED_FILE), "wb") as f:
        for d in dropped:
            f.write(orjson.dumps(d) + b"\n")
    return paths


def postprocess(planned, answered, cfg, template, output, progress=False):
    """Check, deduplicate and write every answered request of `planned`; returns the post-processing summary."""
    tally, dropped, read_report = Tally(), [], ReadReport()
    survivors = first_checks(planned, answered, cfg, template, tally, dropped, progress)
    kept = dedup_checks(survivors, cfg, tally, dropped, read_report)
    docs = []
    for s in kept:
        counts = tally.lang(s["planned"].seed.lang)
        counts["kept"] += 1
        counts["kept_completion_tokens"] += s["choice"].get("completion_tokens") or 0
        docs.append(to_document(s, cfg, template))
    paths = write_outputs(docs, dropped, output, cfg.output.shard_docs)
    return {"languages": tally.langs, "total": tally.totals(), "notes": tally.notes, "output_shards": paths,
            "dropped_file": os.path.join(output, DROPPED_FILE),
            "reference_read": read_report.summary() if cfg.postprocess.reference else None}
