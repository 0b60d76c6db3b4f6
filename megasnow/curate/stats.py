"""Per-stage, per-language counters (files and bytes in/out, removals by reason) that merge across shards."""


def new_stats():
    return {"stages": {}, "bad_input": {}, "bad_input_examples": [], "excluded_dirs": {}}


def printable(text):
    """`text` as valid UTF-8 for reports: undecodable file-name bytes (os.fsdecode's lone surrogates) and other
    lone surrogates are written as backslash escapes (`caf\\xe9.py`, `\\ud800`)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def lang_counter(stats, stage, lang):
    stage_d = stats["stages"].setdefault(stage, {})
    return stage_d.setdefault(lang, {"files_in": 0, "bytes_in": 0, "files_out": 0, "bytes_out": 0, "removed": {}})


def count_in(stats, stage, lang, nbytes):
    c = lang_counter(stats, stage, lang)
    c["files_in"] += 1
    c["bytes_in"] += nbytes


def count_out(stats, stage, lang, nbytes):
    c = lang_counter(stats, stage, lang)
    c["files_out"] += 1
    c["bytes_out"] += nbytes


def count_removed(stats, stage, lang, reason, n=1):
    removed = lang_counter(stats, stage, lang)["removed"]
    removed[reason] = removed.get(reason, 0) + n


def count_bad(stats, reason, where, max_examples=50):
    stats["bad_input"][reason] = stats["bad_input"].get(reason, 0) + 1
    if len(stats["bad_input_examples"]) < max_examples:
        stats["bad_input_examples"].append(printable(f"{where}: {reason}"))


def count_excluded(stats, pattern):
    """A folder skipped by `source.exclude_dirs` (dependency, vendored or hidden): counted by pattern."""
    excluded = stats.setdefault("excluded_dirs", {})
    excluded[pattern] = excluded.get(pattern, 0) + 1


def merge_into(total, part, max_examples=50):
    """Add the counters of `part` into `total` (nested dicts of ints; example lists are concatenated, capped)."""
    for key, value in part.items():
        if isinstance(value, dict):
            merge_into(total.setdefault(key, {}), value, max_examples)
        elif isinstance(value, list):
            lst = total.setdefault(key, [])
            lst.extend(value[: max(0, max_examples - len(lst))])
        else:
            total[key] = total.get(key, 0) + value
    return total


def add_totals(stats):
    """Add an `all` language row to every stage."""
    for stage, langs in stats["stages"].items():
        total = {"files_in": 0, "bytes_in": 0, "files_out": 0, "bytes_out": 0, "removed": {}}
        for lang, c in langs.items():
            if lang != "all":
                merge_into(total, c)
        langs["all"] = total
    return stats
