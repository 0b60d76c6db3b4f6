"""Up-front document counts of the ablation's inputs: each set must hold the documents its stages need, checked
before anything is written or trained. Malformed records and damaged shards are counted and warned (FILE:LINE)."""
from megasnow.config import ConfigError
from megasnow.utils.cli import warn as _warn

# An annotator trained on fewer examples per class reports a held-out ROC-AUC over a handful of texts (n=2 reads 1.0).
MIN_EXAMPLES_PER_CLASS = 20
# Random phase-1 files, not seen in annotator training, that the annotator's benchmark ROC-AUC is measured against.
MIN_ALIGNMENT_FILES = 10


class InputCounts:
    """Usable documents of one input key, with the read report (files, records, skipped, damaged)."""

    def __init__(self, key, documents, report, tokens=None):
        self.key, self.documents, self.report, self.tokens = key, documents, report, tokens

    def describe(self):
        r = self.report
        extra = f" ({self.tokens:,} tokens)" if self.tokens is not None else ""
        extra += f"; {r.skips.total} malformed/unusable record(s) skipped" if r.skips.total else ""
        extra += f"; {len(r.damaged)} damaged shard(s)" if r.damaged else ""
        return f"{self.documents} usable document(s) in {r.files} file(s){extra}"


def _warn_report(key, report, warn):
    if report.skips.total:
        shown = "; ".join(report.skips.examples[:3])
        more = f" (+{report.skips.total - 3} more)" if report.skips.total > 3 else ""
        warn(f"{key}: skipped {report.skips.total} record(s): {shown}{more}")


def count_documents(paths, key, text_field="text", warn=_warn, tokenizer=None):
    """InputCounts of JSONL/Parquet `paths` (read with read_shards): records whose `text_field` is a scorable
    document (megasnow.quality.documents.check_document_text). Skipped records are warned with their FILE:LINE.
    With `tokenizer` (a path), also their tokens, counted as the selection counts them
    (megasnow.quality.selection.count_tokens: no special tokens), in InputCounts.tokens."""
    from megasnow.quality.documents import check_document_text
    from megasnow.utils.records import ReadReport, read_shards

    tok = None
    if tokenizer is not None:
        from megasnow.data.tokenizer import load_tokenizer

        tok = load_tokenizer(tokenizer)
    report = ReadReport()
    n, tokens, pending = 0, 0, []
    for path, pos, rec in read_shards(paths, report, on_damaged=lambda d: warn(f"{key}: damaged shard {d.describe()}")):
        text, reason = check_document_text(rec.get(text_field))
        if reason:
            report.skips.add(f"{text_field!r} {reason}", f"{path}:{pos}")
            continue
        n += 1
        if tok is not None:
            pending.append(text)
            if len(pending) >= 256:
                tokens += sum(len(ids) for ids in tok.encode_batch(pending))
                pending = []
    if tok is not None and pending:
        tokens += sum(len(ids) for ids in tok.encode_batch(pending))
    _warn_report(key, report, warn)
    return InputCounts(key, n, report, tokens if tok is not None else None)


def count_positives(spec, key, warn=_warn):
    """InputCounts of an AnnotatorSpec's positives as megasnow.quality's builder reads them (limits applied)."""
    from megasnow.quality.training_data import load_positives
    from megasnow.recipe.prepare import positive_sources
    from megasnow.utils.records import ReadReport

    report = ReadReport()
    n = len(load_positives(positive_sources(spec), report=report,
                           on_damaged=lambda d: warn(f"{key}: damaged shard {d.describe()}")))
    _warn_report(key, report, warn)
    return InputCounts(key, n, report)


def check_document_counts(cfg, warn=_warn, log=None):
    """Raise ConfigError (one line: the key, the count found, the minimum needed and what to change) when an input
    set of `cfg` (an AblationConfig) holds too few documents for its stages:
      annotators[i].positives: >= MIN_EXAMPLES_PER_CLASS;
      data.phase1: for each trained annotator its negatives (as many as its positives) + MIN_ALIGNMENT_FILES random
        files it did not train on; with annotator folders MIN_ALIGNMENT_FILES;
      data.valid: >= 1;
      ablation.budget_tokens (x repeats for selected_once): at most data.phase1's tokens (counted with
        data.tokenizer, as the selection counts them).
    Returns {key: InputCounts}."""
    d = cfg.data
    counts = {"data.phase1": count_documents(d.phase1, "data.phase1", d.text_field, warn, tokenizer=d.tokenizer),
              "data.valid": count_documents(d.valid, "data.valid", d.text_field, warn)}
    need, why = MIN_ALIGNMENT_FILES, f"{MIN_ALIGNMENT_FILES} random files for the annotators' ROC-AUC measure"
    for i, spec in enumerate(cfg.annotators):
        if spec.folder is not None:
            continue
        key = f"annotators[{i}].positives"
        pos = counts[key] = count_positives(spec, key, warn)
        if pos.documents < MIN_EXAMPLES_PER_CLASS:
            raise ConfigError(f"{key}: {pos.describe()}; annotator {spec.name!r} needs at least "
                              f"{MIN_EXAMPLES_PER_CLASS} positives (and as many phase-1 negatives) to train and "
                              f"measure a held-out ROC-AUC: add positive documents or raise their `limit`")
        n = max(pos.documents, MIN_EXAMPLES_PER_CLASS) + MIN_ALIGNMENT_FILES
        if n > need:
            need = n
            why = (f"{pos.documents} negatives for annotator {spec.name!r} (as many as its positives) + "
                   f"{MIN_ALIGNMENT_FILES} random files it did not train on for its ROC-AUC measure")
    p1 = counts["data.phase1"]
    if p1.documents < need:
        hint = " or lower the annotator's positives `limit`" if need > MIN_ALIGNMENT_FILES else ""
        raise ConfigError(f"data.phase1: {p1.describe()}; the ablation needs at least {need} ({why}): add phase-1 "
                          f"documents{hint}")
    ab = cfg.ablation
    biggest = max([ab.budget_tokens] + [ab.budget_tokens * ab.repeats for a in ab.arms
                                        if a.split("@")[0] == "selected_once"])
    if biggest > p1.tokens:
        what = ("ablation.budget_tokens x ablation.repeats (the selected_once arm's selection)"
                if biggest != ab.budget_tokens else "ablation.budget_tokens")
        most = p1.tokens // (biggest // ab.budget_tokens)
        raise ConfigError(f"{what} = {biggest:,} tokens, but data.phase1 holds {p1.tokens:,} tokens (in "
                          f"{p1.documents} usable documents, counted with {d.tokenizer}): a selection cannot be larger "
                          f"than the corpus; lower ablation.budget_tokens (at most {most:,}) or add phase-1 documents")
    if counts["data.valid"].documents < 1:
        raise ConfigError(f"data.valid: {counts['data.valid'].describe()}; the held-out loss needs at least 1 "
                          f"document: point data.valid at held-out documents")
    if log is not None:
        log("inputs: " + "; ".join(f"{k} {c.describe()}" for k, c in counts.items()))
    return counts
