"""What a dataset's token ids mean: PREFIX.meta.json beside PREFIX.bin/.idx, and the end-of-document id a blend uses.

tools/preprocess_data.py records the tokenizer settings, the end-of-document id it appended (or that it appended
none) and the vocabulary size; merge_datasets carries the record over. Megatron-LM ignores the file. For datasets
without one (binarized by Megatron-LM, or before the file existed) the id is read off the data: the token that ends
every document and occurs nowhere else.
"""
import json
import os
from dataclasses import dataclass, field

import numpy as np

from megasnow.errors import UserError
from megasnow.utils.atomic import atomic_write_text

META_SUFFIX = ".meta.json"
META_FORMAT = "megasnow-dataset-meta"
META_VERSION = 1
# Keys that say how the ids were produced; two datasets with equal values here hold ids that mean the same thing.
TOKEN_KEYS = ("tokenizer_type", "tokenizer_model", "tokenizer_sha256", "semantics", "vocab_size", "append_eod",
              "eod_id", "eod_token", "bos_id", "prefix_ids", "suffix_ids", "hf_include_special_tokens", "hf_use_fast",
              "added_tokens")


class DatasetMetaError(UserError, ValueError):
    """An unreadable metadata file, or datasets of one blend that end their documents with different ids."""


def meta_path(prefix):
    return os.fspath(prefix) + META_SUFFIX


def write_dataset_meta(prefix, meta):
    """Write PREFIX.meta.json atomically: `meta` plus the format tag. Returns the path."""
    path = meta_path(prefix)
    record = {"format": META_FORMAT, "version": META_VERSION, **meta}
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
    return path


def read_dataset_meta(prefix):
    """The metadata dict of a dataset, or None when it has no PREFIX.meta.json; DatasetMetaError if unreadable."""
    path = meta_path(prefix)
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise DatasetMetaError(f"{path}: unreadable dataset metadata ({e}); delete it to fall back to reading "
                               f"the end-of-document id off the data") from e
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise DatasetMetaError(f"{path}: not a megasnow dataset metadata file (no format {META_FORMAT!r})")
    return meta


def tokenizer_file(path):
    """The file that holds a tokenizer: `path` itself, the `tokenizer.json` of a HF tokenizer folder, else None."""
    if path and os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    return path if path and os.path.isfile(path) else None


def tokenizer_sha256(path):
    """SHA-256 (hex) of a tokenizer file's bytes (a SentencePiece .model, a tokenizer.json, the tokenizer.json of a
    HF tokenizer folder), or None when there is no such file: a content fingerprint that a copy keeps and a
    retrained tokenizer does not."""
    import hashlib

    path = tokenizer_file(path)
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def token_settings(meta):
    """The part of a metadata dict that fixes what the ids mean (TOKEN_KEYS)."""
    return {k: meta.get(k) for k in TOKEN_KEYS if k in meta}


RECORDED_SINCE_LATER = ("tokenizer_sha256",)  # keys newer files record: one missing on a side is no difference


def token_settings_differ(a, b):
    """The first TOKEN_KEYS key whose values differ between two metadata dicts, else None. A key that only newer
    files record (RECORDED_SINCE_LATER) counts only when both record it, so older datasets still match."""
    sa, sb = token_settings(a), token_settings(b)
    for k in RECORDED_SINCE_LATER:
        if k not in sa or k not in sb:
            sa.pop(k, None)
            sb.pop(k, None)
    return next((k for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)), None)


def infer_eod_id(prefix, max_documents=512):
    """The id that ends every sampled document and occurs inside none of them, or None.

    Up to `max_documents` non-empty documents, evenly spaced, are read; at least two are needed. A token that is only
    common at document ends (a newline piece) also occurs inside documents, so it is not taken for an EOD.
    """
    from megasnow.data.indexed import IndexedDataset

    ds = IndexedDataset(prefix)
    try:
        docs = ds.document_indices
        candidates = np.flatnonzero(docs[1:] > docs[:-1])  # documents with at least one sequence
        if len(candidates) < 2:
            return None
        pick = np.unique(candidates[np.linspace(0, len(candidates) - 1,
                                                min(max_documents, len(candidates))).astype(np.int64)])
        last, seen = None, 0
        for d in pick:
            tokens = ds.document(int(d))
            if tokens.size == 0:
                continue
            if last is None:
                last = int(tokens[-1])
            if int(tokens[-1]) != last or np.any(tokens[:-1] == last):
                return None
            seen += 1
        return last if seen >= 2 else None
    finally:
        ds.close()


@dataclass
class DocumentTokens:
    """The end-of-document id for a blend and where it came from.

    eod_id: the id that ends documents (None: the data holds no end-of-document token). bos_id: the BOS id documents
    start with, when their tokenizer adds one (HuggingFace post-processor, legacy Llama2Tokenizer), else None.
    vocab_size: the largest vocabulary size recorded (ids reach vocab_size - 1), None when unrecorded.
    source: a sentence for logs. per_dataset: {prefix: eod id or None}.
    """

    eod_id: int | None
    bos_id: int | None = None
    vocab_size: int | None = None
    source: str = ""
    per_dataset: dict = field(default_factory=dict)


def resolve_document_tokens(prefixes, eod_id=None, tokenizer=None):
    """The end-of-document id that document masking should split `prefixes` (one blend, or all phases) at.

    Order: `eod_id` (the config's data.eod_id) when given; else the id recorded in each dataset's metadata, or, for a
    dataset without metadata, read off its data (infer_eod_id); else the tokenizer's `eod_id`. Datasets that end
    their documents with different ids raise DatasetMetaError naming two of them (set data.eod_id, or binarize them
    alike). Datasets binarized without --append-eod contribute no id.
    """
    found, bos, vocab, per = {}, set(), [], {}
    for prefix in prefixes:
        meta = read_dataset_meta(prefix)
        if meta is not None:
            if meta.get("vocab_size") is not None:
                vocab.append(int(meta["vocab_size"]))
            if meta.get("prefix_ids"):  # documents start with these ids (a BOS)
                bos.add(int(meta["prefix_ids"][0]))
            eod = meta.get("eod_id") if meta.get("append_eod") else None
        else:
            eod = infer_eod_id(prefix)
        per[prefix] = eod
        if eod is not None:
            found.setdefault(int(eod), []).append(prefix)
    source_bos = next(iter(bos)) if len(bos) == 1 else None
    vocab_size = max(vocab) if vocab else None
    if eod_id is not None:
        return DocumentTokens(int(eod_id), source_bos, vocab_size, "data.eod_id", per)
    if len(found) > 1:
        (a, pa), (b, pb) = list(found.items())[:2]
        raise DatasetMetaError(f"datasets end their documents with different ids: {pa[0]} with {a}, {pb[0]} with {b}; "
                               f"binarize them with the same tokenizer settings (--eod-token) or set data.eod_id")
    if found:
        (eod, paths), = found.items()
        return DocumentTokens(eod, source_bos, vocab_size, f"the datasets' end-of-document id ({len(paths)} of "
                              f"{len(per)} datasets end their documents with it)", per)
    if tokenizer is not None:
        return DocumentTokens(tokenizer.eod_id, source_bos, vocab_size,
                              "the tokenizer's eod_id (no end-of-document id found in the datasets)", per)
    return DocumentTokens(None, source_bos, vocab_size, "no end-of-document id in the datasets", per)
