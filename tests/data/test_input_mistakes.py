"""A new user's mistakes with the data tools are one `error: ...` line naming the flag or file, exit 2, and leave
nothing behind: --json-keys twice, an output prefix under a file (or an output file that is a folder), an input in
an unsupported format, an input whose every record is malformed or lacks the key, the wrong --tokenizer-type for the
tokenizer file; a file given twice is read once with a warning; an unreached --vocab-size is said; every documented
binarize command appends the end-of-document id."""
import glob
import json
import os
import re

import pytest

from megasnow.data.indexed import IndexedDataset, IndexedDatasetBuilder, write_dataset
from tests.data.code_fixtures import hf_tokenizer_json, real_code_files, sentencepiece_model
from tests.data.test_data_tools_cli import REPO, preprocess_data, run_cli, train_tokenizer  # tools/ on sys.path

import merge_datasets  # noqa: E402  (tools/, put on sys.path by test_data_tools_cli)

pytest.importorskip("megasnow._binarize")


@pytest.fixture
def code(tmp_path):
    """code.jsonl: 39 records in the curated format (content, not text) and the same as code.csv."""
    texts = [t for _, t in real_code_files()[:39]]
    src = tmp_path / "code.jsonl"
    src.write_text("".join(json.dumps({"repo": "r", "path": f"{i}.py", "content": t}) + "\n"
                           for i, t in enumerate(texts)))
    (tmp_path / "code.csv").write_text("repo,path,content\n" + "".join(f"r,{i}.py,x\n" for i in range(39)))
    return src


def _preprocess(inputs, prefix, *extra):
    return ["--input", *map(str, inputs), "--tokenizer-model", sentencepiece_model(), "--no-progress",
            "--output-prefix", str(prefix), *extra]


def _error(capsys):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err[len("error: "):-1]


def test_json_keys_twice(tmp_path, code, capsys):
    assert run_cli(preprocess_data.main, _preprocess([code], tmp_path / "w1", "--json-keys", "content",
                                                     "content")) == 2
    assert _error(capsys) == "--json-keys names 'content' twice; give each key once (one dataset is written per key)"
    assert sorted(os.listdir(tmp_path)) == ["code.csv", "code.jsonl"]


def test_output_prefix_under_a_file_or_onto_a_folder(tmp_path, code, capsys):
    write_dataset(str(tmp_path / "ds"), [[1, 2, 3]])
    before = sorted(os.listdir(tmp_path))
    under = str(code / "x")
    runs = [(preprocess_data.main, _preprocess([code], under, "--json-keys", "content")),
            (train_tokenizer.main, ["--input", str(code), "--json-keys", "content", "--vocab-size", "400",
                                    "--output-prefix", under]),
            (merge_datasets.main, ["--input", str(tmp_path / "ds"), "--output-prefix", under])]
    for main, argv in runs:
        assert run_cli(main, argv) == 2
        assert _error(capsys) == (f"--output-prefix {under}: {code} is a file, not a folder; give a prefix under a "
                                  f"folder (or move {code} away)")
    (tmp_path / "o_content_document.idx").mkdir()
    assert run_cli(preprocess_data.main, _preprocess([code], tmp_path / "o", "--json-keys", "content")) == 2
    assert _error(capsys) == (f"--output-prefix {tmp_path / 'o'}: {tmp_path / 'o_content_document.idx'} is a folder, "
                              f"but the output file goes there; give another prefix (or move the folder away)")
    os.rmdir(tmp_path / "o_content_document.idx")
    assert sorted(os.listdir(tmp_path)) == before


def test_unsupported_format_and_unusable_records(tmp_path, code, capsys):
    out = tmp_path / "new" / "sub" / "out"  # the folders a failed run made for its outputs are removed again
    assert run_cli(preprocess_data.main, _preprocess([tmp_path / "code.csv"], out)) == 2
    assert _error(capsys) == (f"input '{tmp_path / 'code.csv'}' (.csv) is not a supported format: give JSONL "
                              f"(.jsonl, .json, .ndjson; plain, .gz or .zst) or Parquet (.parquet) files")
    missing = (f"none of the 39 records in {code} has the string key 'text' (their keys: repo, path, content); "
               f"pass --json-keys content")
    assert run_cli(preprocess_data.main, _preprocess([code], out)) == 2  # no --json-keys: 'text', which none has
    assert _error(capsys) == missing
    assert run_cli(train_tokenizer.main, ["--input", str(code), "--vocab-size", "400", "--output-prefix",
                                          str(out)]) == 2
    assert _error(capsys) == missing
    (tmp_path / "bad.jsonl").write_text((tmp_path / "code.csv").read_text())  # a CSV named .jsonl
    assert run_cli(preprocess_data.main, _preprocess([tmp_path / "bad.jsonl"], out)) == 2
    assert re.fullmatch(rf"all 40 records in {re.escape(str(tmp_path / 'bad.jsonl'))} are malformed \(40 x bad JSON "
                        rf"\(.*\)\); first at .*bad.jsonl:1; check that the input is JSONL .*", _error(capsys))
    assert sorted(os.listdir(tmp_path)) == ["bad.jsonl", "code.csv", "code.jsonl"]


def test_curate_refuses_an_explicit_csv(tmp_path, code, capsys):
    import curate

    assert run_cli(curate.main, ["--input", str(tmp_path / "code.csv"), "--output", str(tmp_path / "cur")]) == 2
    assert _error(capsys).startswith(f"input '{tmp_path / 'code.csv'}' (.csv) is not a supported format")
    assert not os.path.exists(tmp_path / "cur")


def test_the_same_file_twice_is_binarized_once(tmp_path, code, capsys):
    assert run_cli(preprocess_data.main, _preprocess([code, code], tmp_path / "o", "--json-keys", "content")) == 0
    out, err = capsys.readouterr()
    assert err == (f"warning: input '{code}' is given twice; reading it once (to weight a file, use the blend's "
                   f"weights)\n")
    assert "binarized 39 documents from 1 file(s)" in out
    assert IndexedDataset(str(tmp_path / "o_content_document")).num_documents == 39


def test_a_failure_at_the_second_key_leaves_nothing(tmp_path, monkeypatch):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t, "other": t[:50]}) + "\n" for _, t in real_code_files()[:5]))
    finalize, calls = IndexedDatasetBuilder.finalize, []

    def failing(self, idx_path):
        calls.append(idx_path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return finalize(self, idx_path)

    monkeypatch.setattr(IndexedDatasetBuilder, "finalize", failing)
    with pytest.raises(OSError):
        preprocess_data.preprocess([str(src)], str(tmp_path / "o"), sentencepiece_model(), json_keys=("text", "other"),
                                   progress=False)
    assert len(calls) == 2 and sorted(os.listdir(tmp_path)) == ["in.jsonl"]  # the first key's dataset taken back


def test_wrong_tokenizer_type_for_the_file_names_the_right_one(tmp_path, code, capsys):
    argv = ["--input", str(code), "--json-keys", "content", "--no-progress", "--output-prefix", str(tmp_path / "o")]
    assert run_cli(preprocess_data.main, argv + ["--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model",
                                                 sentencepiece_model()]) == 2
    assert _error(capsys).endswith("; it is a SentencePiece model: use --tokenizer-type SentencePieceTokenizer")
    for kind in ("SentencePieceTokenizer", "GPTSentencePieceTokenizer", "Llama2Tokenizer"):
        assert run_cli(preprocess_data.main, argv + ["--tokenizer-type", kind, "--tokenizer-model",
                                                     hf_tokenizer_json()]) == 2
        assert _error(capsys).endswith("; it is a HuggingFace tokenizer (JSON): use --tokenizer-type "
                                       "HuggingFaceTokenizer")
    assert sorted(os.listdir(tmp_path)) == ["code.csv", "code.jsonl"]


def test_an_unreached_vocab_size_is_said(tmp_path, code, capsys):
    argv = ["--input", str(code), "--json-keys", "content", "--vocab-size", "2000000", "--num-threads", "1",
            "--output-prefix", str(tmp_path / "tok" / "t")]
    assert run_cli(train_tokenizer.main, argv) == 0
    out, err = capsys.readouterr()
    from megasnow.data.tokenizer import load_tokenizer

    got = load_tokenizer(str(tmp_path / "tok" / "t.model")).vocab_size
    said = (f"--vocab-size 2,000,000 was not reached: the vocabulary has {got:,} pieces because the input holds too "
            f"little distinct text for more merges; add training text, or ask for at most {got:,}")
    assert got < 2_000_000 and err == f"warning: {said}\n" and out.splitlines()[-1] == f"  {said}"
    assert train_tokenizer.vocab_shortfall(400, 400) is None
    assert "raise --input-sentence-size (it capped the input)" in train_tokenizer.vocab_shortfall(500, 400, True)


def test_every_documented_binarize_command_appends_the_end_of_document_id():
    commands = []
    for doc in glob.glob(os.path.join(REPO, "docs", "*.md")) + [os.path.join(REPO, "README.md")]:
        text = open(doc, encoding="utf-8").read().replace("\\\n", " ")
        commands += [(doc, line) for line in text.splitlines() if line.lstrip().startswith(
            "python tools/preprocess_data.py")]
    assert len(commands) >= 3  # phases 1, 2 and 3
    assert [c for c in commands if "--append-eod" not in c[1]] == []
