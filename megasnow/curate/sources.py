"""Ingest: plan input shards (JSONL/Parquet files, groups of repository folders) and stream their files as records.

Each record is {"content", "repo", "path", "lang", "ext", "stars"}; unreadable, binary, empty, oversized, invalid
UTF-8 and malformed inputs are counted in the shard's stats (never fatal, never dropped without a count).
"""
import json
import logging
import math
import os
import stat

from megasnow.curate.filters import universal_newlines
from megasnow.curate.languages import canonical_language, extension_of, language_of_path
from megasnow.curate.stats import count_bad, count_excluded, count_in, count_removed, new_stats, printable
from megasnow.curate.tree import (DEVICE, FIFO, OTHER, SOCKET, UNENCODABLE, excluded_by, is_encodable, list_entries,
                                  read_regular_file, walk_repository)
from megasnow.curate.work import reading
from megasnow.utils.records import (PARQUET_SUFFIXES, InputNotFoundError, SkipLog, ShardReadError, check_record_file,
                                    is_record_file, iter_records)

log = logging.getLogger(__name__)

BINARY_PROBE_BYTES = 8192
# In auto mode only these make a folder "record shards": a repository's own package.json or data.json must not.
SHARD_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".jsonl.zst", ".parquet")
UNREADABLE_SHARD = "unreadable shard"


def plan_shards(inputs, cfg, report=None):
    """Shard specs (JSON-able dicts, in a deterministic order) for the given input paths.

    Raises InputNotFoundError (naming the input) before anything is read if an input does not exist. Entries
    skipped while planning (odd top-level entries of a folder of repositories, excluded top-level folders, record
    "files" that are FIFOs or devices) are counted in `report` (a stats dict) when given.
    """
    report = new_stats() if report is None else report
    for item in inputs:
        if not os.path.exists(os.fspath(item)):
            raise InputNotFoundError(f"input {printable(os.fspath(item))!r} does not exist; check the --input path")
    shards = []
    for item in inputs:
        item = os.fspath(item)
        kind = _input_kind(item, cfg.format)
        if kind == "records":
            if os.path.isdir(item):
                # an explicit format takes every record suffix (.json too); auto mode only the unambiguous ones
                wanted = is_record_file if cfg.format in ("parquet", "jsonl") else is_shard_name
                files = _record_files(item, wanted, report)
            else:
                files = [check_record_file(item)]  # a .csv named explicitly: one error line, not N bad records
            shards += [{"kind": "records", "path": os.path.abspath(f)} for f in files]
        else:
            shards += _plan_repo_shards(item, cfg, report)
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


def _record_files(folder, wanted, report):
    """Record shards under `folder` (sorted). Symlinked shards are read (dataset caches link to blobs) when they
    point at regular files; FIFOs, sockets, devices and dangling links are counted and never opened."""
    files = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for n in names:
            full = os.path.join(root, n)
            if not wanted(n):
                continue
            try:
                mode = os.stat(full).st_mode
            except OSError as e:
                count_bad(report, f"unreadable ({type(e).__name__})", full)
                continue
            if stat.S_ISREG(mode):
                files.append(full)
            else:
                count_bad(report, FIFO if stat.S_ISFIFO(mode) else SOCKET if stat.S_ISSOCK(mode)
                          else DEVICE if stat.S_ISBLK(mode) or stat.S_ISCHR(mode) else OTHER, full)
    return sorted(files)


def _plan_repo_shards(root, cfg, report):
    """Group the repositories (subfolders) of `root` into shards of about repo_shard_bytes of source files.

    Only real folders are repositories: a top-level symlink (to another repository, or anywhere) is counted and
    skipped, like FIFOs, sockets and devices; loose regular files form the repository "." (named after `root`).
    """
    root = os.path.abspath(root)
    repos, loose = [], False
    try:
        entries = list_entries(root)
    except OSError as e:
        raise InputNotFoundError(f"input folder {printable(root)!r} cannot be listed ({type(e).__name__}: "
                                 f"{e.strerror}); check its permissions") from e
    for name, kind in entries:
        where = os.path.join(root, name)
        if kind == "file":
            loose = True
        elif kind == "dir":
            pattern = excluded_by(name, cfg.exclude_dirs)
            if pattern is not None:
                count_excluded(report, pattern)
            elif not is_encodable(name):
                _bad(report, None, UNENCODABLE, where)
            else:
                repos.append(name)
        else:
            _skipped_entry(report, kind, where)
    if loose:
        repos.insert(0, ".")
    shards, current, size = [], [], 0
    for repo in repos:
        repo_dir = os.path.join(root, repo)
        paths = _loose_files(root) if repo == "." else walk_repository(repo_dir, cfg.exclude_dirs)
        for p in paths:
            if language_of_path(p) is not None:
                try:
                    size += os.lstat(os.path.join(repo_dir, p)).st_size
                except OSError:
                    pass
        current.append(repo)
        if size >= cfg.repo_shard_bytes:
            shards.append({"kind": "repos", "root": root, "repos": current})
            current, size = [], 0
    if current:
        shards.append({"kind": "repos", "root": root, "repos": current})
    return shards


def _loose_files(root):
    """The regular files directly in `root` (its other entries are counted when the shards are planned)."""
    return [name for name, kind in list_entries(root) if kind == "file"]


def iter_shard_files(shard, cfg, stats, raise_transient=False):
    """Yield the valid file records of one shard; everything else is counted in `stats` (stage "ingest").

    A record shard that stops being readable keeps the records read before the damage (the same ones on every
    run: decoding is deterministic) and is listed in stats["unreadable_shards"]; with `raise_transient`, an I/O
    error that a retry may cure is raised instead (ShardReadError) so the caller can read the shard again.
    """
    if shard["kind"] == "records":
        yield from _iter_record_shard(shard["path"], cfg, stats, raise_transient)
    else:
        for repo in shard["repos"]:
            yield from _iter_repository(shard["root"], repo, cfg, stats)


def _iter_repository(root, repo, cfg, stats):
    """The valid files of one repository folder; a folder that cannot be walked is counted, never fatal."""
    repo_dir = os.path.join(root, repo)
    repo_name = os.path.basename(root) if repo == "." else repo

    def skipped(kind, rel):
        _skipped_entry(stats, kind, os.path.join(repo_dir, rel))

    try:
        paths = _loose_files(root) if repo == "." else walk_repository(
            repo_dir, cfg.exclude_dirs, skipped, lambda pattern, rel: count_excluded(stats, pattern))
    except OSError as e:  # the repository vanished or cannot be listed since the shards were planned
        _bad(stats, None, f"unreadable folder ({type(e).__name__})", repo_dir)
        return
    wanted = set(cfg.languages)
    for rel in paths:
        lang = language_of_path(rel)
        if lang is None:
            continue  # not source code of any language we know (README, images, ...)
        where = os.path.join(repo_dir, rel)
        reading(printable(where))
        if not (is_encodable(rel) and is_encodable(repo_name)):
            count_in(stats, "ingest", lang, 0)
            _bad(stats, lang, UNENCODABLE, where)
            continue
        try:
            size, data = read_regular_file(where, cfg.max_file_bytes)
        except OSError as e:
            count_in(stats, "ingest", lang, 0)
            _bad(stats, lang, f"unreadable ({type(e).__name__})", where)
            continue
        count_in(stats, "ingest", lang, size)
        if data is None:
            _bad(stats, lang, "oversized", where)
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
        stats.setdefault("unreadable_shards", []).append({"path": printable(path), "records_read": e.records,
                                                          "error": printable(e.error)})
        count_bad(stats, UNREADABLE_SHARD, f"{path} (after {e.records} records; {e.error})")
    for reason, n in skips.counts.items():  # malformed JSONL lines (bad JSON, invalid UTF-8)
        stats["bad_input"][reason] = stats["bad_input"].get(reason, 0) + n
        count_removed(stats, "ingest", "unknown", reason, n)
        lang_row = stats["stages"]["ingest"]["unknown"]
        lang_row["files_in"] += n
    stats["bad_input_examples"].extend(skips.examples[: max(0, 50 - len(stats["bad_input_examples"]))])


def _iter_records_checked(path, cfg, stats, skips):
    wanted = set(cfg.languages)
    unit = "row" if path.endswith(PARQUET_SUFFIXES) else "line"
    reading(printable(path))
    for pos, rec in iter_records(path, skips):
        reading(printable(path), f"{unit} {pos}")
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
        if not (is_encodable(repo) and is_encodable(fpath)):  # lone surrogates (JSON \ud800 escapes)
            _bad(stats, lang, UNENCODABLE, f"{where} ({printable(repo)}/{printable(fpath)})")
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
        stars = int(stars) if isinstance(stars, (int, float)) and math.isfinite(stars) else None
        stars = stars if stars is not None and 0 <= stars < 2**63 else None  # int64 in the metadata
        yield {"content": content, "repo": repo, "path": fpath, "lang": lang, "ext": ext, "stars": stars}


def _bad(stats, lang, reason, where):
    """Count one bad input (in the ingest row of its language too, when it has one)."""
    count_bad(stats, reason, where)
    if lang is not None:
        count_removed(stats, "ingest", lang, reason)


def _skipped_entry(stats, kind, where):
    """An entry that is never read (symlink, FIFO, socket, device, unlistable or unnameable folder)."""
    lang = language_of_path(os.path.basename(where))
    if lang is not None:
        count_in(stats, "ingest", lang, 0)
    _bad(stats, lang, kind, where)


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
                lines = universal_newlines(src).rstrip("\n").split("\n")  # Python's own line breaks
                parts.append("\n".join("# " + line if line else "#" for line in lines))
        return "\n\n".join(parts) + "\n" if parts else ""
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
