"""The shared reader's input rules (megasnow.utils.records): an explicitly named file of an unsupported format is
one error naming it and the formats (a folder scan skips it), the same file given twice is read once with a warning,
and an input whose every record is malformed or lacks the stage's keys is an error even without strict."""
import json

import pytest

from megasnow.utils.records import (ReadReport, UnsupportedInputError, UnusableInputError, expand_inputs,
                                    read_shards)


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_an_explicit_csv_is_refused_and_a_folder_scan_skips_it(tmp_path):
    (tmp_path / "code.csv").write_text("path,content\na.py,x = 1\n")
    good = _jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    for given in (str(tmp_path / "code.csv"), str(tmp_path / "*.csv")):
        with pytest.raises(UnsupportedInputError) as e:
            expand_inputs([given])
        assert str(e.value) == (f"input '{tmp_path / 'code.csv'}' (.csv) is not a supported format: give JSONL "
                                f"(.jsonl, .json, .ndjson; plain, .gz or .zst) or Parquet (.parquet) files")
    assert expand_inputs([str(tmp_path)]) == [good] == expand_inputs([str(tmp_path / "*")])
    assert expand_inputs([str(tmp_path / "code.csv")], other_files="keep") == [str(tmp_path / "code.csv")]


def test_the_same_file_twice_is_read_once_with_a_warning(tmp_path, monkeypatch):
    good = _jsonl(tmp_path / "a.jsonl", [{"text": "x"}, {"text": "y"}])
    notes = []
    assert expand_inputs([good, good, str(tmp_path)], on_duplicate=notes.append) == [good]
    assert notes == [f"input {good!r} is given twice; reading it once (to weight a file, use the blend's weights)"]
    monkeypatch.chdir(tmp_path)
    notes.clear()
    assert expand_inputs(["a.jsonl", "./a.jsonl"], on_duplicate=notes.append) == ["a.jsonl"]
    assert notes == ["input './a.jsonl' is the same file as 'a.jsonl'; reading it once (to weight a file, use the "
                     "blend's weights)"]
    report = ReadReport()
    assert [r["text"] for _, _, r in read_shards([good, good], report)] == ["x", "y"] and report.files == 1


def test_every_record_malformed_is_an_error_naming_the_file_and_count(tmp_path):
    bad = tmp_path / "code.jsonl"
    bad.write_text("path,content\n" + "".join(f"a{i}.py,x = {i}\n" for i in range(38)))
    with pytest.raises(UnusableInputError) as e:
        list(read_shards([str(bad)]))
    assert str(e.value).startswith(f"all 39 records in {bad} are malformed (39 x bad JSON (")
    assert str(e.value).endswith(f"; first at {bad}:1; check that the input is JSONL (.jsonl, .json, .ndjson; "
                                 f"plain, .gz or .zst) or Parquet (.parquet)")
    # one good record among malformed ones: read, the rest counted (the stage's usual report)
    bad.write_text(bad.read_text() + json.dumps({"text": "ok"}) + "\n")
    report = ReadReport()
    assert [r["text"] for _, _, r in read_shards([str(bad)], report)] == ["ok"] and report.skips.total == 39


def test_every_record_lacking_the_key_names_the_keys_they_have(tmp_path):
    src = _jsonl(tmp_path / "code.jsonl", [{"repo": "r", "path": f"{i}.py", "content": "x = 1\n" * i, "size": i}
                                           for i in range(1, 40)])
    report = ReadReport()
    with pytest.raises(UnusableInputError) as e:
        for _ in read_shards([src], report, keys=["text"]):
            pass
    assert str(e.value) == (f"none of the 39 records in {src} has the string key 'text' (their keys: repo, path, "
                            f"content, size); pass --json-keys content")
    assert report.records == report.keyless == 39
    assert len(list(read_shards([src], keys=["content"]))) == 39  # the right key: no error
    assert len(list(read_shards([src]))) == 39  # a stage that names no key is not checked


def test_empty_input_is_not_an_error(tmp_path):
    (tmp_path / "e.jsonl").write_bytes(b"")
    report = ReadReport()
    assert list(read_shards([str(tmp_path / "e.jsonl")], report, keys=["text"])) == [] and report.files == 1


def test_shard_read_error_survives_pickling():
    """Raised in a worker process, it reaches the parent with its fields (the __reduce__ was dead code before)."""
    import pickle

    from megasnow.utils.records import ShardReadError

    e = pickle.loads(pickle.dumps(ShardReadError("a.jsonl.gz", 7, EOFError("cut"), byte_offset=123)))
    assert (e.path, e.records, e.byte_offset, e.error) == ("a.jsonl.gz", 7, 123, "EOFError: cut")
    assert str(e) == "a.jsonl.gz: unreadable after 7 records (EOFError: cut), at byte 123 of the decompressed data"
