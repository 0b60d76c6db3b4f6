"""The data tools follow the one CLI rule: a missing or empty input is one line (exit 2, or a warning), Ctrl-C in
preprocess_data is one line and exit 130 with nothing left behind, train_tokenizer shows progress while SentencePiece
trains, --help shows the defaults, and rates never round to 0."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from megasnow.utils.cli import run_tool
from megasnow.utils.units import format_bytes_rate, format_duration, format_rate
from tests.data.code_fixtures import code_jsonl, real_code_files, sentencepiece_model

TOOLS = os.path.join(os.path.dirname(__file__), "..", "..", "tools")
REPO = os.path.abspath(os.path.join(TOOLS, ".."))
sys.path.insert(0, TOOLS)
import preprocess_data  # noqa: E402
import train_tokenizer  # noqa: E402

pytest.importorskip("megasnow._binarize")


def run_cli(main, argv):
    try:
        return run_tool(main, argv)
    except SystemExit as e:
        return e.code


def test_train_tokenizer_missing_and_empty_input(tmp_path, capsys):
    out = str(tmp_path / "tok" / "t")
    assert run_cli(train_tokenizer.main, ["--input", str(tmp_path / "missing.jsonl"), "--output-prefix", out,
                                          "--vocab-size", "400"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: input '{tmp_path / 'missing.jsonl'}' matches no file; check the path\n"
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "blank.jsonl").write_text('\n{"path": "x"}\n')  # no text key: no text either
    starts = {"empty.jsonl": f"error: no training text found in {tmp_path / 'empty.jsonl'}",
              "blank.jsonl": f"error: none of the 1 records in {tmp_path / 'blank.jsonl'} has the string key 'text' "
                             f"(their keys: path); pass --json-keys path"}
    for name, start in starts.items():
        assert run_cli(train_tokenizer.main, ["--input", str(tmp_path / name), "--output-prefix", out,
                                              "--vocab-size", "400"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(start) and err.count("\n") == 1, err
    assert not os.path.exists(tmp_path / "tok")


def test_train_tokenizer_reports_progress_while_training(tmp_path):
    lines = []
    model, report = train_tokenizer.train_tokenizer([code_jsonl()], str(tmp_path / "t"), 600, input_sentence_size=5000,
                                                    num_threads=1, log=lines.append, heartbeat_seconds=0.05)
    n_docs = sum(1 for _ in open(code_jsonl()))
    assert report.records == n_docs and report.sentences > n_docs and os.path.exists(model)
    assert lines and all(line.startswith("train_tokenizer: ") and " elapsed, " in line for line in lines)
    assert any("training (BPE merges)" in line and f"{report.sentences:,} sentences" in line for line in lines)


def test_help_shows_defaults(capsys):
    for main, flags in ((preprocess_data.main, ["--workers", "--json-keys", "--log-interval"]),
                        (train_tokenizer.main, ["--num-threads", "--json-keys", "--input-sentence-size"])):
        assert run_cli(main, ["--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        for flag in flags:
            after = text.split(flag, 2)[2] if text.count(flag) > 1 else text.split(flag, 1)[1]
            assert "(default: " in after.split(" --")[0], (flag, after[:200])


def test_rates_adapt_their_unit():
    assert format_rate(60, 124, "docs") == "29.0 docs/min"
    assert format_rate(3, 7200, "docs") == "1.50 docs/h"
    assert format_rate(12_345, 2, "docs") == "6,172 docs/s" and format_rate(5, 2, "docs") == "2.5 docs/s"
    assert format_bytes_rate(850_000, 1) == "850 kB/s" and format_bytes_rate(40, 1) == "40 B/s"
    assert format_duration(0.4) == "0.4 s" and format_duration(245) == "4 min 05 s"
    summary = {"files": ["a.jsonl"], "outputs": {"text": ("o.bin", "o.idx")}, "documents": 60, "tokens": {"text": 9},
               "skipped": 0, "skipped_by_reason": {}, "skipped_examples": [], "damaged_shards": [],
               "input_bytes": 60_000, "seconds": 124.0, "dtype": "uint16", "tokenizer": "t", "eod": None}
    first = preprocess_data.format_summary(summary).splitlines()[0]
    assert "29.0 docs/min" in first and "484 B/s of input" in first and "2 min 04 s" in first


def test_preprocess_empty_input_warns_or_fails_with_strict(tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    argv = ["--input", str(tmp_path / "empty.jsonl"), "--tokenizer-model", sentencepiece_model(), "--no-progress",
            "--output-prefix"]
    assert run_cli(preprocess_data.main, argv + [str(tmp_path / "strict"), "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no documents in the input ({tmp_path / 'empty.jsonl'}; 1 of them zero bytes)")
    assert err.count("\n") == 1 and sorted(os.listdir(tmp_path)) == ["empty.jsonl"]
    assert run_cli(preprocess_data.main, argv + [str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("warning: no documents in the input") and "wrote an empty dataset" in err
    assert "binarized 0 documents" in out and os.path.exists(tmp_path / "out_text_document.idx")


def test_preprocess_ctrl_c_is_one_line_exit_130_and_leaves_nothing(tmp_path):
    src = tmp_path / "big.jsonl"
    line_block = open(code_jsonl(), "rb").read()
    with open(src, "wb") as f:
        for _ in range(12):  # tens of MB: far more than the run gets through before the signal
            f.write(line_block)
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, os.path.join(TOOLS, "preprocess_data.py"), "--input", str(src),
                             "--tokenizer-model", sentencepiece_model(), "--output-prefix", str(tmp_path / "out"),
                             "--workers", "2", "--append-eod", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.time() + 120
        while not any(p.name.startswith(".out_text_document.bin") for p in tmp_path.iterdir()):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.02)
        time.sleep(0.3)  # blocks are in flight in both workers
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    # binarizing is all or nothing: the line must not promise a resume that does not happen
    assert err.decode() == ("preprocess_data.py: interrupted (Ctrl-C); nothing was written (outputs appear only at "
                            "the end); rerun the same command to start over\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.jsonl"]  # no partial output, no temporary file


def test_skip_existing_rebuilds_outputs_made_with_other_token_settings(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for _, t in real_code_files()[:5]))
    argv = ["--input", str(src), "--tokenizer-model", sentencepiece_model(), "--append-eod", "--no-progress",
            "--output-prefix", str(tmp_path / "o"), "--skip-existing"]
    assert run_cli(preprocess_data.main, argv) == 0 and "binarized 5" in capsys.readouterr().out
    assert run_cli(preprocess_data.main, argv) == 0 and "skipping" in capsys.readouterr().out
    assert run_cli(preprocess_data.main, argv + ["--eod-token", "<|endoftext|>"]) == 0
    out, err = capsys.readouterr()
    assert "other tokenizer settings; rebuilding" in err and "binarized 5" in out
