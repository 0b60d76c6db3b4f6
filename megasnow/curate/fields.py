"""Check before any work that the record fields the config names exist: a misnamed `source.content_field` would
otherwise remove every record as malformed and end in an empty, "successful" run.

A few records without the field are counted as malformed by the prepare stage, as before; this check refuses only
when none of the first FIELD_SAMPLE_RECORDS records (over the record shards in order) has it, which for inputs of
up to that many records means every record lacks it.
"""
import difflib

from megasnow.config import ConfigError
from megasnow.curate.stats import printable
from megasnow.utils.records import iter_records

FIELD_SAMPLE_RECORDS = 1000
REQUIRED_FIELDS = ("content_field", "repo_field", "path_field")  # lang, ext and stars have fallbacks


def sample_records(shards, limit=FIELD_SAMPLE_RECORDS):
    """Up to `limit` records from the record shards of `shards` (plan_shards' list), in order. A shard that cannot
    be read is skipped here (the prepare stage reports it)."""
    out = []
    for shard in shards:
        if shard["kind"] != "records":
            continue
        try:
            for _, rec in iter_records(shard["path"], batch_rows=256):
                out.append(rec)
                if len(out) >= limit:
                    return out
        except Exception:  # a damaged shard: prepare keeps its readable records and reports it
            continue
    return out


def check_record_fields(shards, source_cfg):
    """Raise ConfigError naming `source.<key>` when no sampled record has a string in the field it names, with the
    fields the records do have and the likeliest right one."""
    records = sample_records(shards)
    if not records:
        return
    for key in REQUIRED_FIELDS:
        name = getattr(source_cfg, key)
        if any(isinstance(rec.get(name), str) for rec in records):
            continue
        fields = sorted({k for rec in records for k in rec}, key=str)
        strings = [k for k in fields if any(isinstance(rec.get(k), str) for rec in records)]
        guess = difflib.get_close_matches(name, strings, n=1) or [k for k in strings if name.lower() in str(k).lower()]
        if not guess and key == "content_field" and strings:  # the content is the longest text of a record
            guess = [max(strings, key=lambda k: sum(len(r[k]) for r in records if isinstance(r.get(k), str)))]
        hint = f"; did you mean source.{key}={guess[0]}?" if len(guess) == 1 else \
            f"; did you mean one of {', '.join(guess)}?" if guess else ""
        paths = [s["path"] for s in shards if s["kind"] == "records"]
        where = printable(paths[0]) + (f" and {len(paths) - 1} more" if len(paths) > 1 else "")
        scope = f"the first {len(records)} records" if len(records) == FIELD_SAMPLE_RECORDS else \
            f"the {len(records)} records"
        raise ConfigError(f"source.{key}={name!r}: none of {scope} of the input ({where}) has a string field "
                          f"{name!r}; their fields are {', '.join(map(str, fields))}{hint}")
