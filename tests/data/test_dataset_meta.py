"""The end-of-document id a dataset was binarized with reaches document masking whichever way it was binarized:
recorded in PREFIX.meta.json, carried over by merge_datasets, or read off a dataset that has no metadata."""
import json
import os
import sys

import numpy as np
import pytest

from megasnow.data.dataset_meta import (
    DatasetMetaError,
    infer_eod_id,
    meta_path,
    read_dataset_meta,
    resolve_document_tokens,
)
from megasnow.data.indexed import IndexedDataset, write_dataset
from megasnow.data.special_tokens import EOD
from megasnow.data.tokenizer import load_tokenizer
from tests.data.code_fixtures import real_code_files, sentencepiece_model

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
import merge_datasets  # noqa: E402
import preprocess_data  # noqa: E402

pytest.importorskip("megasnow._binarize")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("meta")
    src = root / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for _, t in real_code_files()[:30]))
    out = {}
    for name, kwargs in (("megatron", {}), ("megasnow", {"eod_token": EOD}), ("noeod", {"append_eod": False})):
        prefix = str(root / name)
        preprocess_data.preprocess([str(src)], prefix, sentencepiece_model(), append_eod=kwargs.pop("append_eod", True),
                                   progress=False, **kwargs)
        out[name] = prefix + "_text_document"
    return out


def test_metadata_records_the_end_of_document_id(corpus):
    meta = read_dataset_meta(corpus["megatron"])
    assert (meta["eod_id"], meta["eod_token"], meta["append_eod"]) == (2, "</s>", True)
    assert meta["tokenizer_type"] == "SentencePieceTokenizer" and meta["vocab_size"] == 1200
    assert meta["documents"] == 30 and meta["tokens"] == IndexedDataset(corpus["megatron"]).num_tokens
    assert read_dataset_meta(corpus["megasnow"])["eod_id"] == 3
    assert read_dataset_meta(corpus["noeod"])["eod_id"] is None


@pytest.mark.parametrize("name,eod", [("megatron", 2), ("megasnow", 3)])
def test_document_masking_splits_at_the_recorded_id(corpus, name, eod):
    """Either way of binarizing, the resolved id cuts packed tokens exactly at the documents' ends."""
    import torch

    from megasnow.model.llama import document_ids_from_tokens

    tok = load_tokenizer(sentencepiece_model())
    resolved = resolve_document_tokens([corpus[name]], tokenizer=tok)
    assert resolved.eod_id == eod and "datasets' end-of-document id" in resolved.source
    ds = IndexedDataset(corpus[name])
    docs = [ds.document(i) for i in range(ds.num_documents)]
    packed = torch.from_numpy(np.concatenate(docs).astype(np.int64))[None]
    ids = document_ids_from_tokens(packed, resolved.eod_id)[0].numpy()
    expected = np.concatenate([np.full(len(d), i) for i, d in enumerate(docs)])
    assert np.array_equal(ids, expected)


def test_resolution_order_and_conflicts(corpus, tmp_path):
    tok = load_tokenizer(sentencepiece_model())
    assert resolve_document_tokens([corpus["megatron"]], eod_id=7).eod_id == 7  # data.eod_id wins
    with pytest.raises(DatasetMetaError, match=r"different ids: .*megatron_text_document with 2, "
                                               r".*megasnow_text_document with 3.*set data.eod_id"):
        resolve_document_tokens([corpus["megatron"], corpus["megasnow"]], tokenizer=tok)
    # a dataset without --append-eod contributes no id: the other's is used
    assert resolve_document_tokens([corpus["noeod"], corpus["megasnow"]]).eod_id == 3
    only = resolve_document_tokens([corpus["noeod"]], tokenizer=tok)
    assert only.eod_id == tok.eod_id == 2 and "tokenizer" in only.source
    assert resolve_document_tokens([corpus["noeod"]]).eod_id is None
    bad = tmp_path / "bad"
    write_dataset(str(bad), [[1, 2]])
    open(meta_path(str(bad)), "w").write("{not json")
    with pytest.raises(DatasetMetaError, match=r"bad\.meta\.json: unreadable dataset metadata"):
        resolve_document_tokens([str(bad)])


def test_id_read_off_a_dataset_without_metadata(corpus, tmp_path):
    """Datasets binarized by Megatron-LM (or older megasnow) have no metadata: the EOD is read off the data."""
    for name, eod in (("megatron", 2), ("megasnow", 3)):
        copy = tmp_path / name
        for ext in (".bin", ".idx"):
            (tmp_path / (name + ext)).write_bytes(open(corpus[name] + ext, "rb").read())
        assert read_dataset_meta(str(copy)) is None
        assert infer_eod_id(str(copy)) == eod
        assert resolve_document_tokens([str(copy)]).eod_id == eod
    plain = tmp_path / "plain"
    for ext in (".bin", ".idx"):
        (tmp_path / ("plain" + ext)).write_bytes(open(corpus["noeod"] + ext, "rb").read())
    assert infer_eod_id(str(plain)) is None  # code ends with newline pieces, but they occur inside documents too
    # documents that all end in a token which also occurs inside them: not an EOD
    write_dataset(str(tmp_path / "nl"), [[5, 9, 5], [7, 5], [8, 8, 5]])
    assert infer_eod_id(str(tmp_path / "nl")) is None
    write_dataset(str(tmp_path / "eod"), [[5, 9, 0], [7, 0], [8, 8, 0]])
    assert infer_eod_id(str(tmp_path / "eod")) == 0


def test_merge_carries_metadata_only_when_inputs_agree(corpus, tmp_path, capsys):
    out = str(tmp_path / "same")
    merge_datasets.merge_datasets([corpus["megatron"], corpus["megatron"]], out)
    meta = read_dataset_meta(out)
    assert meta["eod_id"] == 2 and meta["documents"] == 60 and len(meta["merged_from"]) == 2
    warnings = []
    merge_datasets.merge_datasets([corpus["megatron"], corpus["megasnow"]], str(tmp_path / "mixed"),
                                  on_warning=warnings.append)
    assert read_dataset_meta(str(tmp_path / "mixed")) is None
    assert len(warnings) == 1 and "different eod_id (2 vs 3)" in warnings[0]


def test_a_dataset_recorded_before_tokenizer_sha256_still_matches(corpus, tmp_path):
    """tokenizer_sha256 (the tokenizer file's SHA-256) is recorded since 2026-12-01: a dataset whose metadata
    predates it still merges with a newer one and still counts as complete for --skip-existing; two different
    fingerprints do differ."""
    import hashlib
    import shutil

    from megasnow.data.dataset_meta import token_settings_differ, write_dataset_meta

    meta = read_dataset_meta(corpus["megatron"])
    assert meta["tokenizer_sha256"] == hashlib.sha256(open(sentencepiece_model(), "rb").read()).hexdigest()
    old = str(tmp_path / "legacy_text_document")
    for ext in (".bin", ".idx"):
        shutil.copyfile(corpus["megatron"] + ext, old + ext)
    older = {k: v for k, v in meta.items() if k not in ("tokenizer_sha256", "format", "version")}
    write_dataset_meta(old, older)
    assert token_settings_differ(meta, older) is None
    assert token_settings_differ(meta, dict(meta, tokenizer_sha256="0" * 64)) == "tokenizer_sha256"
    warnings = []
    merge_datasets.merge_datasets([corpus["megatron"], old], str(tmp_path / "merged"), on_warning=warnings.append)
    assert warnings == [] and read_dataset_meta(str(tmp_path / "merged"))["documents"] == 60
    assert preprocess_data.outputs_complete(str(tmp_path / "legacy"), ["text"], meta)  # --skip-existing: no rebuild
    assert not preprocess_data.outputs_complete(str(tmp_path / "legacy"), ["text"], dict(meta, eod_id=3))
