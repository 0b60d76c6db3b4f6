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
    for path, what in ((tok, "is a file, not a folder"), (tmp_path / "nowhere", "no such folder")):
        for cmd in (["score", "--input", str(docs), "--output", str(tmp_path / "scores")],
                    ["eval", "--corpus", str(docs)]):
            r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "annotate.py"), *cmd, "--annotator",
                                str(path)], capture_output=True, text=True, env=env, timeout=120)
            assert r.returncode == 2 and r.stderr == (
                f"error: --annotator {path}: {what}; give the annotator folder that `tools/annotate.py train "
                f"--output` wrote (it holds annotator.json and the fine-tuned encoder)\n"), r.stderr
    assert sorted(os.listdir(tmp_path)) == ["docs.jsonl", "tok.model"]
    with pytest.raises(AnnotatorError, match=r"tok.model' is a file, not a folder: give the folder `tools/annotate.py "
                                             r"train --output` wrote \(it holds annotator.json"):
        read_annotator_config(str(tok))
