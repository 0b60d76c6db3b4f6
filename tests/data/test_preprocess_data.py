"""tools/preprocess_data.py and tools/merge_datasets.py on real code with malformed lines mixed in."""
import gzip
import json
import os
import random
import sys

import numpy as np
import pytest

from megasnow.data.indexed import IndexedDataset, IndexedDatasetBuilder, IndexedDatasetError, write_dataset
from megasnow.data.tokenizer import load_tokenizer
from megasnow.utils.cli import run_tool
from megasnow.utils.records import RecordError
from tests.data.code_fixtures import hf_tokenizer_json, real_code_files, sentencepiece_model

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
import merge_datasets  # noqa: E402
import preprocess_data  # noqa: E402

_binarize = pytest.importorskip("megasnow._binarize")

# (raw line, reason it is skipped); inserted between real documents at fixed positions.
MALFORMED = [
    (b'{"text": "unterminated', "bad JSON"),
    (b'{"path": "no text key here"}', "missing key 'text'"),
    (b'{"text": "bad \xff\xfe bytes"}', "invalid UTF-8"),
    (b'{"text": 42}', "key 'text' is not a string"),
    (b'{"text": "lone \\ud800 surrogate"}', "lone surrogate"),
    (b'["an", "array"]', "bad JSON"),
    (b'{"text": "ok"} trailing', "bad JSON"),
    (b'{"text": "raw\tcontrol char"}', "bad JSON"),
]


def _mixed_jsonl(path, n_docs=120, extra_good=()):
    """Real code documents with MALFORMED lines, blank lines and tricky escapes. Returns (texts, bad lines)."""
    docs = [t for _, t in real_code_files()[:n_docs]] + list(extra_good)
    texts, bad = [], {}
    line = 0
    with open(path, "wb") as f:
        for i, text in enumerate(docs):
            if i % 15 == 7:
                raw, reason = MALFORMED[(i // 15) % len(MALFORMED)]
                f.write(raw + b"\n")
                line += 1
                bad[line] = reason
            if i % 40 == 3:
                f.write(b"   \n")  # blank lines are ignored, not counted
                line += 1
            f.write(json.dumps({"text": text, "id": i, "meta": {"nested": [1, 2.5e-3, None, True]}}).encode() + b"\n")
            line += 1
            texts.append(text)
    return texts, bad


@pytest.fixture(scope="module")
def sp_tok():
    return load_tokenizer(sentencepiece_model())


EXTRA = ["", "esc \"quotes\" \\ back/slash \u00e9\U0001F600 \u2028", "\r\n\t\x00\x1f"]


def _expected_dataset(tmp_path, tok, texts, append_eod, name="expected"):
    """The same documents tokenized in Python and written with the builder (Megatron's layout: empty -> no seq)."""
    prefix = str(tmp_path / name)
    b = IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for t in texts:
        ids = tok.encode(t)
        if ids and append_eod:
            ids = ids + [tok.eod_id]
        b.add_document(ids, [len(ids)] if ids else [])
    b.finalize(prefix + ".idx")
    return prefix


def _bytes(prefix):
    with open(prefix + ".bin", "rb") as f, open(prefix + ".idx", "rb") as g:
        return f.read(), g.read()


def test_real_code_with_malformed_lines(tmp_path, sp_tok):
    src = str(tmp_path / "mixed.jsonl")
    texts, bad = _mixed_jsonl(src, extra_good=EXTRA)
    # Small blocks: many blocks in flight across 2 workers, lines cut at block edges.
    s = preprocess_data.preprocess([src], str(tmp_path / "out"), sentencepiece_model(), workers=2, append_eod=True,
                                   block_bytes=16 << 10, progress=False)
    assert s["documents"] == len(texts) and s["skipped"] == len(bad)
    reported = {}
    for ex in s["skipped_examples"]:
        where, reason = ex.split(": ", 1)
        path, line = where.rsplit(":", 1)
        assert path == src
        reported[int(line)] = reason
    assert sorted(reported) == sorted(bad)
    for line, reason in bad.items():
        assert reason in reported[line], (line, reported[line])
    out = preprocess_data.output_paths(str(tmp_path / "out"), "text")
    assert out == (str(tmp_path / "out_text_document.bin"), str(tmp_path / "out_text_document.idx"))
    expected = _expected_dataset(tmp_path, sp_tok, texts, append_eod=True)
    assert _bytes(str(tmp_path / "out_text_document")) == _bytes(expected)
    ds = IndexedDataset(str(tmp_path / "out_text_document"))
    assert ds.document(len(texts) - 3).size == 0  # the empty document stays, with no sequence
    assert sp_tok.decode(ds.document(len(texts) - 2)[:-1].tolist()) == EXTRA[1]
    assert s["tokens"]["text"] == ds.num_tokens


def test_strict_fails_on_first_malformed_line(tmp_path):
    src = str(tmp_path / "mixed.jsonl")
    _, bad = _mixed_jsonl(src, n_docs=60)
    first = min(bad)
    with pytest.raises(RecordError, match=rf"mixed\.jsonl:{first}: bad JSON"):
        preprocess_data.preprocess([src], str(tmp_path / "out"), sentencepiece_model(), workers=2, strict=True,
                                   block_bytes=8 << 10, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["mixed.jsonl"]  # nothing half-written is left behind


def test_compressed_parquet_and_multiple_keys_match_plain(tmp_path, sp_tok):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    docs = [t for _, t in real_code_files()[:40]]
    recs = [{"text": t, "path": p} for (p, _), t in zip(real_code_files()[:40], docs)]
    lines = b"".join(json.dumps(r).encode() + b"\n" for r in recs)
    (tmp_path / "a.jsonl").write_bytes(lines)
    with gzip.open(tmp_path / "b.jsonl.gz", "wb") as f:
        f.write(lines)
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "d.parquet", row_group_size=7)
    outs = {}
    for name in ("a.jsonl", "b.jsonl.gz", "c.jsonl.zst", "d.parquet"):
        prefix = str(tmp_path / ("out_" + name.split(".")[0]))
        s = preprocess_data.preprocess([str(tmp_path / name)], prefix, sentencepiece_model(), json_keys=["text", "path"],
                                       workers=2, block_bytes=4096, progress=False)
        assert s["documents"] == 40 and s["skipped"] == 0
        outs[name] = (_bytes(prefix + "_text_document"), _bytes(prefix + "_path_document"))
    assert len(set(outs.values())) == 1
    path_ds = IndexedDataset(str(tmp_path / "out_a_path_document"))
    assert [sp_tok.decode(path_ds[i].tolist()) for i in range(len(path_ds))] == [r["path"] for r in recs]
    # A glob over all four inputs processes them in sorted order into one dataset.
    s = preprocess_data.preprocess([str(tmp_path / "[abcd].*")], str(tmp_path / "all"), sentencepiece_model(),
                                   workers=2, progress=False)
    assert s["documents"] == 160 and len(s["files"]) == 4


def test_parquet_null_reported_with_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a = 1\n", None, "b = 2\n"]}), tmp_path / "n.parquet")
    s = preprocess_data.preprocess([str(tmp_path / "n.parquet")], str(tmp_path / "o"), sentencepiece_model(),
                                   progress=False)
    assert s["documents"] == 2 and s["skipped_examples"] == [f"{tmp_path / 'n.parquet'}:row 1: key 'text' is null"]


def test_parquet_blocks_count_text_bytes_for_the_rate(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = ["a = 1\n", None, "s = 'héllo ✓'\n", "b = 2\n"]
    pq.write_table(pa.table({"text": texts, "n": [1, 2, 3, 4]}), tmp_path / "t.parquet", row_group_size=2)
    blocks = list(preprocess_data.iter_parquet_blocks(str(tmp_path / "t.parquet"), ["text"], batch_rows=2))
    assert [b[0] for b in blocks] == [0, 2]
    assert sum(b[3] for b in blocks) == sum(len(t.encode()) for t in texts if t)
    assert blocks[-1][2] == os.path.getsize(tmp_path / "t.parquet")


def test_huggingface_tokenizer(tmp_path):
    tok = load_tokenizer(hf_tokenizer_json())
    src = str(tmp_path / "mixed.jsonl")
    texts, bad = _mixed_jsonl(src, n_docs=50, extra_good=EXTRA)
    s = preprocess_data.preprocess([src], str(tmp_path / "hf"), hf_tokenizer_json(), "HuggingFaceTokenizer",
                                   workers=2, append_eod=True, block_bytes=8192, progress=False)
    assert s["documents"] == len(texts) and s["skipped"] == len(bad)
    expected = _expected_dataset(tmp_path, tok, texts, append_eod=True)
    assert _bytes(str(tmp_path / "hf_text_document")) == _bytes(expected)
    # The CLI picks the HuggingFace tokenizer for a .json model without --tokenizer-type.
    assert preprocess_data.main(["--input", src, "--output-prefix", str(tmp_path / "cli"), "--tokenizer-model",
                                 hf_tokenizer_json(), "--append-eod", "--no-progress"]) == 0
    assert _bytes(str(tmp_path / "cli_text_document")) == _bytes(expected)


def test_cli_and_merge(tmp_path, sp_tok, capsys):
    texts = [t for _, t in real_code_files()[:60]]
    for part, chunk in (("p0", texts[:25]), ("p1", texts[25:])):
        (tmp_path / f"{part}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in chunk))
        rc = preprocess_data.main(["--input", str(tmp_path / f"{part}.jsonl"), "--output-prefix", str(tmp_path / part),
                                   "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model",
                                   sentencepiece_model(), "--workers", "2", "--append-eod", "--no-progress"])
        assert rc == 0
    assert "binarized 35 documents" in capsys.readouterr().out
    rerun = ["--input", str(tmp_path / "p1.jsonl"), "--output-prefix", str(tmp_path / "p1"), "--tokenizer-model",
             sentencepiece_model(), "--append-eod", "--skip-existing"]
    assert preprocess_data.main(rerun) == 0 and "skipping" in capsys.readouterr().out
    # A damaged output is not "existing": the rerun rebuilds it.
    idx = tmp_path / "p1_text_document.idx"
    good = idx.read_bytes()
    idx.write_bytes(good[:-8])
    assert preprocess_data.main(rerun + ["--no-progress"]) == 0 and "binarized 35" in capsys.readouterr().out
    assert idx.read_bytes() == good
    rc = merge_datasets.main(["--input", str(tmp_path / "p0_text_document"), str(tmp_path / "p1_text_document"),
                              "--output-prefix", str(tmp_path / "merged")])
    assert rc == 0
    expected = _expected_dataset(tmp_path, sp_tok, texts, append_eod=True)
    assert _bytes(str(tmp_path / "merged")) == _bytes(expected)
    # Folder input merges every pair in it, sorted by name.
    folder = tmp_path / "parts"
    folder.mkdir()
    for part in ("p0", "p1"):
        for ext in (".bin", ".idx"):
            os.rename(tmp_path / f"{part}_text_document{ext}", folder / f"{part}{ext}")
    assert merge_datasets.main(["--input", str(folder), "--output-prefix", str(tmp_path / "merged2")]) == 0
    assert _bytes(str(tmp_path / "merged2")) == _bytes(expected)
    assert run_tool(preprocess_data.main, ["--input", str(tmp_path / "nothing*.jsonl"), "--output-prefix", "x",
                                           "--tokenizer-model", sentencepiece_model()]) == 2
    assert capsys.readouterr().err.startswith("error: input ")


def test_merge_rejects_mismatched_dtypes(tmp_path):
    a = write_dataset(str(tmp_path / "a"), [[1, 2]], dtype=np.uint16)
    b = write_dataset(str(tmp_path / "b"), [[3]], dtype=np.int32)
    with pytest.raises(IndexedDatasetError, match="different dtypes"):
        merge_datasets.merge_datasets([a, b], str(tmp_path / "m"))
    assert not os.path.exists(tmp_path / "m.bin")


# ------------------------------------------------------------------------- the C++ JSONL parser vs json.loads

def _random_json_line(rng):
    alphabet = ["a", " ", "\t", "\n", "\r", '"', "\\", "/", "é", "日", "😀", "\u2028", "\x00", "\x1f", "\ud800", "}"]
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
    rec = {"id": rng.randint(-5, 5), "text": text, "x": [1.5, {"y": None}, False]}
    if rng.random() < 0.3:
        rec = {"x": rec["x"], "text": text}  # key order varies
    line = json.dumps(rec, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    if rng.random() < 0.5:  # corrupt one byte: often invalid JSON, sometimes still valid
        i = rng.randrange(len(line))
        line = line[:i] + bytes([rng.choice(b'{}[]",:\\ 0a\xc3\xff')]) + line[i + 1:]
    return line.replace(b"\n", b"\\n")


def _python_verdict(line):
    try:
        rec = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
        return None
    try:
        return rec["text"].encode("utf-8")
    except UnicodeEncodeError:
        return None


def test_cpp_parser_agrees_with_json_loads():
    rng = random.Random(0)
    lines = [_random_json_line(rng) for _ in range(3000)]
    lines = [ln for ln in lines if ln.strip()]
    texts, kept, errors, n = _binarize.parse_jsonl_block(b"\n".join(lines) + b"\n", ["text"], 1)
    assert n == len(lines) and len(kept) + len(errors) == len(lines)
    ours = {line: t for line, t in zip(kept, texts[0])}
    for i, raw in enumerate(lines, 1):
        assert ours.get(i) == _python_verdict(raw), raw
    assert 300 < len(errors) < 2700  # both outcomes are well exercised


def test_pack_tokens_range_check():
    arrays = [np.array([1, 2, 3], np.int32), np.array([], np.int32), np.array([65535], np.int32)]
    data, lengths = _binarize.pack_tokens(arrays, 2, 9, 65535)
    assert lengths == [4, 0, 2] and np.frombuffer(data, np.uint16).tolist() == [1, 2, 3, 9, 65535, 9]
    with pytest.raises(ValueError, match="token id 65536 does not fit"):
        _binarize.pack_tokens([np.array([65536], np.int32)], 2, -1, 65535)
