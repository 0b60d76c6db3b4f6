"""Ingest: plan input shards (JSONL/Parquet files, groups of repository folders) and stream their files as records.

Each record is {"content", "repo", "path", "lang", "ext", "stars"}; unreadable, binary, empty, oversized, invalid
UTF-8 and malformed inputs are counted in the shard's stats (never fatal, never dropped without a count).
"""
import json
import logging
import os

from megasnow.curate.languages import canonical_language, extension_of, language_of_path
from megasnow.curate.stats import count_bad, count_in, count_removed
from megasnow.utils.records import SkipLog, ShardReadError, is_record_file, iter_records

log = logging.getLogger(__name__)

BINARY_PROBE_BYTES = 8192
# In auto mode only these make a folder "record shards": a repository's own package.json or data.json must not.
SHARD_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".jsonl.zst", ".parquet")
UNREADABLE_SHARD = "unreadable shard"


def plan_shards(inputs, cfg):
    """Shard specs (JSON-able dicts, in a deterministic order) for the given input paths."""
    shards = []
    for item in inputs:
        item = os.fspath(item)
        if not os.path.exists(item):
            raise FileNotFoundError(f"input {item!r} does not exist")
        kind = _input_kind(item, cfg.format)
        if kind == "records":
            if os.path.isdir(item):
                # an explicit format takes every record suffix (.json too); auto mode only the unambiguous ones
                wanted = is_record_file if cfg.format in ("parquet", "jsonl") else is_shard_name
                files = sorted(os.path.join(r, n) for r, _, ns in os.walk(item) for n in ns if wanted(n))
            else:
                files = [item]
            shards += [{"kind": "records", "path": os.path.abspath(f)} for f in files]
        else:
            shards += _plan_repo_shards(item, cfg.repo_shard_bytes)
    for i, s in enumerate(shards):
        s["name"] = f"{i:05d}"
    return shards


def _input_kind(item, fmt):
    if fmt in ("parquet", "jsonl"):
        return "records"
    if fmt == "repos":
        return "repos"
    if not os.path.isdir(item):
        return "records"
    # auto: a folder holding .jsonl/.ndjson (plain, .gz, .zst) or .parquet files at its top level holds record shards
    return "records" if any(is_shard_name(n) for n in os.listdir(item)) else "repos"


def is_shard_name(name):
    return name.endswith(SHARD_SUFFIXES)


def _repo_files(repo_dir):
    """Relative paths of the regular files of one repository folder, sorted; .git and symlinks are skipped."""
    out = []
    for root, dirs, names in os.walk(repo_dir):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for n in names:
            full = os.path.join(root, n)
            out.append(os.path.relpath(full, repo_dir).replace(os.sep, "/"))
    return sorted(out)


def _plan_repo_shards(root, shard_bytes):
    """Group the repositories (subfolders) of `root` into shards of about shard_bytes of source files."""
    root = os.path.abspath(root)
    entries = sorted(os.listdir(root))
    repos = [e for e in entries if os.path.isdir(os.path.join(root, e)) and e != ".git"]
    if any(os.path.isfile(os.path.join(root, e)) for e in entries):
        repos.insert(0, ".")  # loose files in the root form a repository named after the root folder
    shards, current, size = [], [], 0
    for repo in repos:
        repo_dir = os.path.join(root, repo)
        if repo == ".":
            paths = [e for e in entries if os.path.isfile(os.path.join(root, e))]
        else:
            paths = _repo_files(repo_dir)
        for p in paths:
            if language_of_path(p) is not None:
                try:
                    size += os.lstat(os.path.join(repo_dir, p)).st_size
                except OSError:
                    pass
        current.append(repo)
        if size >= shard_bytes:
            shards.append({"kind": "repos", "root": root, "repos": current})
            current, size = [], 0
    if current:
        shards.append({"kind": "repos", "root": root, "repos": current})
    return shards


def iter_shard_files(shard, cfg, stats, raise_transient=False):
    """Yield the valid file records of one shard; everything else is counted in `stats` (stage "ingest").

    A record shard that stops being readable keeps the records read before the damage (the same ones on every
    run: decoding is deterministic) and is listed in stats["unreadable_shards"]; with `raise_transient`, an I/O
    error that a retry may cure is raised instead (ShardReadError) so the caller can read the shard again.
    """
    if shard["kind"] == "records":
        yield from _iter_record_shard(shard["path"], cfg, stats, raise_transient)
    else:
        yield from _iter_repo_shard(shard["root"], shard["repos"], cfg, stats)


def _iter_repo_shard(root, repos, cfg, stats):
    wanted = set(cfg.languages)
    for repo in repos:
        repo_dir = os.path.join(root, repo)
        if repo == ".":
            repo_name = os.path.basename(root)
            paths = sorted(e for e in os.listdir(root) if os.path.isfile(os.path.join(root, e)))
        else:
            repo_name = repo
            paths = _repo_files(repo_dir)
        for rel in paths:
            lang = language_of_path(rel)
            if lang is None:
                continue  # not source code of any language we know (README, images, ...)
            full = os.path.join(repo_dir, rel)
            where = full
            if os.path.islink(full):
                count_in(stats, "ingest", lang, 0)
                _bad(stats, lang, "symlink", where)
                continue
            try:
                size = os.stat(full).st_size
            except OSError as e:
                count_in(stats, "ingest", lang, 0)
                _bad(stats, lang, f"unreadable ({type(e).__name__})", where)
                continue
            count_in(stats, "ingest", lang, size)
            if size > cfg.max_file_bytes:
                _bad(stats, lang, "oversized", where)
                continue
            try:
                with open(full, "rb") as f:
                    data = f.read()
            except OSError as e:
                _bad(stats, lang, f"unreadable ({type(e).__name__})", where)
                continue
            rec = _check_bytes(data, lang, where, cfg, stats)
            if rec is None:
                continue
            content, lang = rec
            if lang not in wanted:
                count_removed(stats, "ingest", lang, "language not selected")
                continue
            yield {"content": content, "repo": repo_name, "path": rel, "lang": lang, "ext": extension_of(rel),
                   "stars": None}


def _check_bytes(data, lang, where, cfg, stats):
    if not data.strip():
        _bad(stats, lang, "empty", where)
        return None
    if b"\0" in data[:BINARY_PROBE_BYTES]:
        _bad(stats, lang, "binary", where)
        return None
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError:
        _bad(stats, lang, "invalid UTF-8", where)
        return None
    return _finish_content(content, lang, where, cfg, stats)


def _finish_content(content, lang, where, cfg, stats):
    if lang == "jupyter" and cfg.notebooks_to_scripts:
        content = notebook_to_script(content)
        if content is None:
            _bad(stats, lang, "malformed notebook", where)
            return None
        if not content.strip():
            _bad(stats, lang, "empty", where)
            return None
    return content, lang


def _iter_record_shard(path, cfg, stats, raise_transient):
    skips = SkipLog()
    try:
        yield from _iter_records_checked(path, cfg, stats, skips)
    except ShardReadError as e:
        if e.transient and raise_transient:
            raise
        log.warning("input shard %s is unreadable after %d records, which are kept; the rest is lost: %s",
                    path, e.records, e.error)
        stats.setdefault("unreadable_shards", []).append({"path": path, "records_read": e.records, "error": e.error})
        count_bad(stats, UNREADABLE_SHARD, f"{path} (after {e.records} records; {e.error})")
    for reason, n in skips.counts.items():  # malformed JSONL lines (bad JSON, invalid UTF-8)
        stats["bad_input"][reason] = stats["bad_input"].get(reason, 0) + n
        count_removed(stats, "ingest", "unknown", reason, n)
        lang_row = stats["stages"]["ingest"]["unknown"]
        lang_row["files_in"] += n
    stats["bad_input_examples"].extend(skips.examples[: max(0, 50 - len(stats["bad_input_examples"]))])


def _iter_records_checked(path, cfg, stats, skips):
    wanted = set(cfg.languages)
    for pos, rec in iter_records(path, skips):
        where = f"{path}:{pos}"
        content = rec.get(cfg.content_field)
        repo = rec.get(cfg.repo_field)
        fpath = rec.get(cfg.path_field)
        ext = rec.get(cfg.ext_field) or (extension_of(fpath) if isinstance(fpath, str) else "")
        ext = ext if not ext or ext.startswith(".") else "." + ext
        lang = canonical_language(rec.get(cfg.lang_field)) or (language_of_path(fpath) if isinstance(fpath, str)
                                                              else None) or "unknown"
        if not isinstance(content, str):
            count_in(stats, "ingest", lang, 0)
            _bad(stats, lang, f"malformed record (no string field {cfg.content_field!r})", where)
            continue
        try:
            size = len(content.encode("utf-8"))
        except UnicodeEncodeError:  # lone surrogates: not representable as UTF-8
            count_in(stats, "ingest", lang, len(content))
            _bad(stats, lang, "invalid UTF-8", where)
            continue
        count_in(stats, "ingest", lang, size)
        if not isinstance(repo, str) or not repo or not isinstance(fpath, str) or not fpath:
            _bad(stats, lang, f"malformed record (no {cfg.repo_field!r}/{cfg.path_field!r})", where)
            continue
        if size > cfg.max_file_bytes:
            _bad(stats, lang, "oversized", where)
            continue
        if not content.strip():
            _bad(stats, lang, "empty", where)
            continue
        if "\0" in content[:BINARY_PROBE_BYTES]:
            _bad(stats, lang, "binary", where)
            continue
        checked = _finish_content(content, lang, where, cfg, stats)
        if checked is None:
            continue
        content, lang = checked
        if lang not in wanted:
            count_removed(stats, "ingest", lang, "language not selected")
            continue
        stars = rec.get(cfg.stars_field)
        stars = int(stars) if isinstance(stars, (int, float)) and stars == stars else None
        yield {"content": content, "repo": repo, "path": fpath, "lang": lang, "ext": ext, "stars": stars}


def _bad(stats, lang, reason, where):
    count_bad(stats, reason, where)
    count_removed(stats, "ingest", lang, reason)


def notebook_to_script(text):
    """A Jupyter notebook's code cells as code and its markdown cells as `#` comments; None if not a notebook."""
    try:
        nb = json.loads(text)
        cells = nb["cells"]
        parts = []
        for cell in cells:
            src = cell.get("source", "")
            src = "".join(src) if isinstance(src, list) else src
            if not isinstance(src, str) or not src.strip():
                continue
            if cell.get("cell_type") == "code":
                parts.append(src.rstrip("\n"))
            elif cell.get("cell_type") == "markdown":
                parts.append("\n".join("# " + line if line else "#" for line in src.rstrip("\n").split("\n")))
        return "\n\n".join(parts) + "\n" if parts else ""
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
