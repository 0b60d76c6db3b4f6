"""Folders of repositories trust no file-system entry: only regular files are read; symlinks (a top-level alias of
another repository, links out of the tree), FIFOs, sockets and devices are counted by kind and never opened or
followed; names that are not UTF-8 are counted with their escaped form; vendored folders follow source.exclude_dirs;
one odd repository never stops the run."""
import contextlib
import json
import os
import shutil
import signal
import socket
import stat

import pytest

from megasnow.config import load_config
from megasnow.curate.config import CurateConfig
from megasnow.curate.pipeline import run_pipeline
from megasnow.curate.sources import iter_shard_files, plan_shards
from megasnow.curate.stats import new_stats
from megasnow.curate.tree import entry_kind, read_regular_file
from tests.curate.corpus import stdlib_file, write_jsonl
from tests.curate.test_curate_inputs import kept_paths

OWN = {"decoder.py": "json/decoder.py", "scanner.py": "json/scanner.py", "colorsys.py": "colorsys.py"}
SECRET = "def secret():\n    return 'outside the tree: must never be read'\n\n\nprint(secret())\n" * 3


@contextlib.contextmanager
def deadline(seconds):
    """Fail instead of hanging if something opens a FIFO (a blocking open never returns)."""
    def expired(signum, frame):
        raise TimeoutError(f"curation did not finish in {seconds} s (a FIFO was opened?)")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def make_device(path):
    """A character device like /dev/null where the test may create one (root); False where it may not."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        return True
    except (PermissionError, OSError):
        return False


def build_tree(tmp_path, monkeypatch):
    """root/ holds repo 'proj' (own code + every odd entry kind + vendored folders), a top-level symlink alias of
    it, a non-UTF-8-named repository, and a folder outside the tree that links point to."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.py").write_text(SECRET)
    root = tmp_path / "repos"
    proj = root / "proj"
    for name, rel in OWN.items():
        (proj / "src").mkdir(parents=True, exist_ok=True)
        (proj / "src" / name).write_text(stdlib_file(rel))
    os.symlink(str(proj), str(root / "alias"))  # top level: a second name for a repository folder
    os.symlink(str(outside / "secret.py"), str(proj / "src" / "linked.py"))  # a link out of the tree
    os.symlink(str(outside), str(proj / "linkdir"))  # a folder link out of the tree
    os.symlink(str(proj / "missing.py"), str(proj / "dangling.py"))
    os.mkfifo(str(proj / "src" / "pipe.py"))
    monkeypatch.chdir(str(proj / "src"))  # AF_UNIX paths are limited to ~108 bytes: bind a relative name
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind("sock.py")
    device = make_device(str(proj / "src" / "dev.py"))
    good = stdlib_file("fnmatch.py")
    os.makedirs(os.fsencode(str(proj)) + b"/caf\xe9")  # a folder whose name is not UTF-8
    with open(os.fsencode(str(proj)) + b"/caf\xe9/inner.py", "w") as f:
        f.write(good)
    with open(os.fsencode(str(proj)) + b"/src/na\xefve.py", "w") as f:  # a file whose name is not UTF-8
        f.write(stdlib_file("shlex.py"))
    os.makedirs(os.fsencode(str(root)) + b"/bad\xfename")  # a repository whose name is not UTF-8
    with open(os.fsencode(str(root)) + b"/bad\xfename/a.py", "w") as f:
        f.write(stdlib_file("glob.py"))
    vendored = {"node_modules/left-pad/index.js": "module.exports = function leftPad(s, n) {\n  return s;\n};\n",
                "vendor/github.com/x/y/y.go": "package y\n\nfunc Y() int {\n\treturn 42\n}\n",
                "third_party/zlib/adler.c": "int adler(int a, int b) {\n    return a * 65521 + b;\n}\n",
                ".venv/lib/site.py": stdlib_file("textwrap.py")}
    for rel, text in vendored.items():
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        (proj / rel).write_text(text)
    (root / "other").mkdir()
    (root / "other" / "calc.py").write_text(stdlib_file("bisect.py"))
    return root, outside, sock, device


def test_entry_kinds_from_lstat(tmp_path):
    kinds = {e.name: entry_kind(e) for e in os.scandir("/dev") if e.name in ("null", "zero")}
    assert kinds == {"null": "device", "zero": "device"}
    (tmp_path / "f").write_text("x")
    os.mkfifo(str(tmp_path / "p"))
    os.symlink(str(tmp_path / "f"), str(tmp_path / "l"))
    os.symlink(str(tmp_path), str(tmp_path / "d"))
    (tmp_path / "sub").mkdir()
    assert {e.name: entry_kind(e) for e in os.scandir(tmp_path)} == \
        {"f": "file", "p": "fifo", "l": "symlink", "d": "symlink", "sub": "dir"}


def test_every_entry_kind_is_checked_before_it_is_read(tmp_path, monkeypatch):
    root, outside, sock, device = build_tree(tmp_path, monkeypatch)
    try:
        with deadline(120):
            stats = run_pipeline([str(root)], str(tmp_path / "out"), load_config(CurateConfig))
    finally:
        sock.close()
    bad = stats["bad_input"]
    # the top-level alias, src/linked.py, linkdir and dangling.py; no repository is read twice
    assert bad["symlink"] == 4 and bad["fifo"] == 1 and bad["socket"] == 1
    assert bad.get("device", 0) == (1 if device else 0)
    assert bad["name not valid UTF-8"] == 3  # folder caf\xe9, file na\xefve.py, repository bad\xfename
    examples = "\n".join(stats["bad_input_examples"])
    for escaped in ("proj/caf\\xe9: name not valid UTF-8", "proj/src/na\\xefve.py: name not valid UTF-8",
                    "repos/bad\\xfename: name not valid UTF-8", "repos/alias: symlink", "src/pipe.py: fifo"):
        assert escaped in examples
    assert stats["excluded_dirs"] == {".*": 1, "node_modules": 1, "vendor": 1, "third_party": 1}
    kept = kept_paths(str(tmp_path / "out"))
    # the repository's own code, once, under its own name (the alias neither adds a repo nor wins exact dedup)
    assert kept == {("proj", f"src/{n}") for n in OWN} | {("other", "calc.py")}
    assert stats["stages"]["exact_dedup"]["all"]["removed"] == {}
    docs = open(tmp_path / "out" / "documents" / "python-00000.jsonl", encoding="utf-8").read()
    assert "outside the tree" not in docs
    with open(tmp_path / "out" / "stats.json", encoding="utf-8") as f:  # valid UTF-8 JSON, escaped names
        assert json.load(f)["bad_input"] == bad


def test_exclude_dirs_is_configurable(tmp_path, monkeypatch):
    root, _, sock, _ = build_tree(tmp_path, monkeypatch)
    sock.close()
    os.unlink(root / "proj" / "src" / "sock.py")
    (root / "proj" / ".git").mkdir()
    (root / "proj" / ".git" / "hook.py").write_text(stdlib_file("csv.py"))
    with deadline(120):
        stats = run_pipeline([str(root)], str(tmp_path / "out"),
                             load_config(CurateConfig, overrides=["source.exclude_dirs=[]"]))
    kept = kept_paths(str(tmp_path / "out"))
    for rel in ("node_modules/left-pad/index.js", "vendor/github.com/x/y/y.go", "third_party/zlib/adler.c",
                ".venv/lib/site.py"):
        assert ("proj", rel) in kept
    assert ("proj", ".git/hook.py") not in kept and stats["excluded_dirs"] == {".git": 1}


def test_one_odd_repository_never_stops_the_run(tmp_path):
    root = tmp_path / "repos"
    for name in ("a", "b", "c"):
        (root / name).mkdir(parents=True)
        (root / name / "m.py").write_text(stdlib_file("colorsys.py").replace("colorsys", name))
    cfg = load_config(CurateConfig).source
    shards = plan_shards([str(root)], cfg)
    shutil.rmtree(root / "b")  # vanished between planning and reading (or unlistable)
    (root / "c" / "m.py").unlink()
    os.mkfifo(str(root / "c" / "m.py"))  # swapped for a FIFO since it was listed: still never opened
    stats = new_stats()
    with deadline(60):
        got = [(r["repo"], r["path"]) for s in shards for r in iter_shard_files(s, cfg, stats)]
    assert got == [("a", "m.py")]
    assert stats["bad_input"] == {"unreadable folder (FileNotFoundError)": 1, "fifo": 1}
    with deadline(10), pytest.raises(OSError, match="not a regular file"):  # listed as a file, swapped since
        read_regular_file(str(root / "c" / "m.py"), 1 << 20)


@pytest.mark.parametrize("field", ["max_stars_repo_name", "max_stars_repo_path"])
def test_lone_surrogates_in_jsonl_names_are_counted(tmp_path, field):
    recs = [{"content": stdlib_file(r), "max_stars_repo_name": "o/" + r, "max_stars_repo_path": r, "lang": "Python"}
            for r in ("csv.py", "glob.py")]
    recs[0][field] = "bad\ud800name"  # json.dumps writes \ud800, json.loads gives back a lone surrogate
    write_jsonl(str(tmp_path / "in.jsonl"), recs)
    stats = run_pipeline([str(tmp_path / "in.jsonl")], str(tmp_path / "out"), load_config(CurateConfig))
    assert stats["bad_input"] == {"name not valid UTF-8": 1}
    assert "bad\\ud800name" in stats["bad_input_examples"][0]
    assert kept_paths(str(tmp_path / "out")) == {("o/glob.py", "glob.py")}
