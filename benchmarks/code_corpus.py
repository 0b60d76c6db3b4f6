"""Builds a JSONL corpus of real source code from this machine (stdlib, site-packages, /usr/include) for benchmarks.

Each record is {"text": file contents, "path": ...}; files are read in sorted order so the corpus is reproducible.
"""
import glob
import json
import os
import subprocess
import sys

CODE_SUFFIXES = (".py", ".h", ".hpp", ".c", ".cc", ".cpp", ".pyi", ".js", ".ts", ".rs", ".go", ".java", ".sh")
DEFAULT_ROOTS = [os.path.dirname(os.__file__), "/usr/lib/python3", "/usr/include"] + sorted(
    glob.glob(os.path.join(os.path.dirname(os.__file__), "site-packages")))


def iter_code_files(roots, max_file_bytes=1 << 20):
    seen = set()
    for root in roots:
        for folder, dirs, names in os.walk(root):
            dirs.sort()
            for name in sorted(names):
                path = os.path.join(folder, name)
                if not name.endswith(CODE_SUFFIXES) or os.path.islink(path):
                    continue
                real = os.path.realpath(path)
                if real in seen:
                    continue
                seen.add(real)
                try:
                    size = os.path.getsize(path)
                    if 0 < size <= max_file_bytes:
                        with open(path, "rb") as f:
                            yield path, f.read().decode("utf-8")
                except (OSError, UnicodeDecodeError):
                    continue


def build_code_jsonl(out_path, target_bytes, roots=None):
    """Write at least target_bytes of code text (or all there is) to out_path; returns (docs, text bytes)."""
    if os.path.exists(out_path) and os.path.exists(out_path + ".done"):
        with open(out_path + ".done") as f:
            docs, size = map(int, f.read().split())
        if size >= target_bytes:
            return docs, size
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    docs = size = 0
    tmp = out_path + ".partial"
    with open(tmp, "w", encoding="utf-8") as f:
        for path, text in iter_code_files(roots or DEFAULT_ROOTS):
            f.write(json.dumps({"text": text, "path": path}, ensure_ascii=False) + "\n")
            docs += 1
            size += len(text.encode("utf-8"))
            if size >= target_bytes:
                break
    os.replace(tmp, out_path)
    with open(out_path + ".done", "w") as f:
        f.write(f"{docs} {size}")
    return docs, size


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else ".bench_data/code.jsonl"
    mb = float(sys.argv[2]) if len(sys.argv) > 2 else 110
    print(build_code_jsonl(out, int(mb * 1e6)))


def train_code_tokenizer(jsonl, model, vocab_size, root):
    """Train a SentencePiece model MODEL (`PREFIX.model`) with tools/train_tokenizer.py on every fifth document of
    `jsonl` (skipped when MODEL exists); `root` is the repository root the tool runs from."""
    if os.path.exists(model):
        return model
    sample = os.path.join(os.path.dirname(model), "tokenizer_train_sample.jsonl")
    with open(jsonl, "rb") as f, open(sample, "wb") as g:
        for i, line in enumerate(f):
            if i % 5 == 0:
                g.write(line)
    subprocess.run([sys.executable, "tools/train_tokenizer.py", "--input", sample, "--output-prefix",
                    model[: -len(".model")], "--vocab-size", str(vocab_size),
                    "--input-sentence-size", "100000"], check=True, cwd=root)
    return model
