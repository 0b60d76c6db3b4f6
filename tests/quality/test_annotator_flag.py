"""--annotator that is a file (e.g. the tokenizer's .model) or missing: one line saying so and what is expected (the
folder `annotate.py train` wrote), exit 2, before torch loads and with nothing written."""
import json
import os
import subprocess
import sys

import pytest

from megasnow.quality.annotator import AnnotatorError, read_annotator_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_annotator_that_is_a_file_or_missing(tmp_path):
    tok = tmp_path / "tok.model"
    tok.write_bytes(b"not a folder")
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"text": "def f(): pass\n"}) + "\n")
    env = dict(os.environ, PYTHONPATH=REPO)
    advice = "give the annotator folder that `tools/annotate.py train --output` wrote (it holds annotator.json and " \
             "the fine-tuned encoder)"
    nowhere = tmp_path / "nowhere"
    for cmd, line in ((["score", "--annotator", str(tok)], f"--annotator {tok}: is a file, not a folder; {advice}"),
                      (["eval", "--corpus", str(docs), "--annotator", str(tok)],
                       f"--annotator {tok}: is a file, not a folder; {advice}"),
                      (["score", "--annotator", str(nowhere)],
                       f"annotator folder {str(nowhere)!r} does not exist: give the folder `tools/annotate.py train "
                       f"--output` wrote (it holds annotator.json and the fine-tuned encoder)")):
        if cmd[0] == "score":
            cmd += ["--input", str(docs), "--output", str(tmp_path / "scores")]
        r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "annotate.py"), *cmd], capture_output=True,
                           text=True, env=env, timeout=120)
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == "error: " + line, r.stderr
    assert sorted(os.listdir(tmp_path)) == ["docs.jsonl", "tok.model"]
    with pytest.raises(AnnotatorError, match=r"tok.model' is a file, not a folder: give the folder `tools/annotate.py "
                                             r"train --output` wrote \(it holds annotator.json"):
        read_annotator_config(str(tok))
