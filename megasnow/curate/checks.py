"""Value checks of the curation config: every numeric key in its valid range, every language a known slug.

Run when a CurateConfig is built (from YAML or overrides), so a bad value is one ConfigError naming the full key and
what to change, before the output folder is touched, instead of a traceback from deep inside a stage.
"""
import difflib
import math

from megasnow.config import ConfigError, from_dict, to_dict
from megasnow.curate.languages import LANGUAGE_EXTENSIONS, canonical_language

MAX_NUM_PERM = 4096  # 4 bytes per permutation per file in the signature shards; optimal_param searches b*r <= this


def check_range(key, value, lo=None, hi=None, lo_open=False, hi_open=False):
    """Raise ConfigError `key must be in [lo, hi] ..., got value` unless lo <= value <= hi (strict where *_open).
    NaN is out of every range."""
    ok = not (isinstance(value, float) and math.isnan(value))
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        raise ConfigError(f"{key} must be {_describe(lo, hi, lo_open, hi_open)}, got {value!r}")


def _describe(lo, hi, lo_open, hi_open):
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    return f"{'<' if hi_open else '<='} {hi}"


def check_language(key, name):
    """Raise ConfigError unless `name` is a language slug of megasnow.curate.languages (suggesting the closest)."""
    if name in LANGUAGE_EXTENSIONS:
        return
    slug = canonical_language(name)
    close = [slug] if slug else difflib.get_close_matches(str(name).lower(), list(LANGUAGE_EXTENSIONS), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{key}: unknown language {name!r}{hint} (supported: {', '.join(LANGUAGE_EXTENSIONS)})")


def check_filter_config(fc, prefix):
    """The ranges of one language's FilterConfig; `prefix` is filters.default or filters.languages.<lang>."""
    check_range(f"{prefix}.max_line_length", fc.max_line_length, 1)
    check_range(f"{prefix}.max_mean_line_length", fc.max_mean_line_length, 0, lo_open=True)
    check_range(f"{prefix}.min_alphanum_fraction", fc.min_alphanum_fraction, 0, 1)
    check_range(f"{prefix}.autogen_lines", fc.autogen_lines, 0)
    check_range(f"{prefix}.encoded_max_match_chars", fc.encoded_max_match_chars, 0)
    check_range(f"{prefix}.encoded_max_fraction", fc.encoded_max_fraction, 0, 1)
    check_range(f"{prefix}.data_min_chars", fc.data_min_chars, 0)
    check_range(f"{prefix}.data_max_chars", fc.data_max_chars, fc.data_min_chars)  # names data_min_chars' value
    for i, lang in enumerate(fc.data_languages):
        check_language(f"{prefix}.data_languages[{i}]", lang)


def check_filters_config(filters, prefix):
    """filters.default and every filters.languages.<lang> override (a known language, known keys, in range)."""
    from megasnow.curate.config import FilterConfig

    check_filter_config(filters.default, f"{prefix}.default")
    for lang, override in filters.languages.items():
        where = f"{prefix}.languages.{lang}"
        check_language(f"{prefix}.languages", lang)
        if not isinstance(override, dict):
            raise ConfigError(f"{where}: expected a mapping of {prefix}.default keys, got {override!r}")
        check_filter_config(from_dict(FilterConfig, {**to_dict(filters.default), **override}, where), where)


def check_decontamination_config(dc, prefix):
    check_range(f"{prefix}.min_substring_chars", dc.min_substring_chars, 1)
    check_range(f"{prefix}.ngram", dc.ngram, 1)
    check_range(f"{prefix}.ngram_min_fraction", dc.ngram_min_fraction, 0, 1, lo_open=True)


def check_near_dedup_config(nd, prefix):
    """A NearDedupConfig's ranges; `prefix` is near_dedup (curation) or where another stage keeps one."""
    check_range(f"{prefix}.threshold", nd.threshold, 0, 1, lo_open=True, hi_open=True)
    check_range(f"{prefix}.num_perm", nd.num_perm, 1, MAX_NUM_PERM)
    check_range(f"{prefix}.ngram", nd.ngram, 1)
    check_range(f"{prefix}.bands", nd.bands, 0)
    check_range(f"{prefix}.rows", nd.rows, 0)
    if (nd.bands == 0) != (nd.rows == 0):
        raise ConfigError(f"{prefix}.bands={nd.bands} and {prefix}.rows={nd.rows}: set both (>= 1) or leave both 0 "
                          "to pick them from the threshold")
    if nd.bands * nd.rows > nd.num_perm:
        raise ConfigError(f"{prefix}.bands * {prefix}.rows must be <= {prefix}.num_perm ({nd.num_perm}), got "
                          f"{nd.bands} * {nd.rows} = {nd.bands * nd.rows}")
    check_range(f"{prefix}.false_positive_weight", nd.false_positive_weight, 0)
    check_range(f"{prefix}.false_negative_weight", nd.false_negative_weight, 0)
    if nd.false_positive_weight + nd.false_negative_weight <= 0:
        raise ConfigError(f"{prefix}.false_positive_weight and {prefix}.false_negative_weight are both 0; give at "
                          "least one a positive weight")
    check_range(f"{prefix}.seed", nd.seed, 0)  # numpy's generator takes no negative seed
    check_range(f"{prefix}.threads", nd.threads, 1)
    check_range(f"{prefix}.batch_size", nd.batch_size, 1)


def check_curate_config(cfg):
    """Raise ConfigError naming the first key of `cfg` (a CurateConfig) whose value is out of range or unknown."""
    src = cfg.source
    if not src.languages:
        raise ConfigError("source.languages is empty: every file would be removed; list the languages to keep "
                          f"(default: all of {', '.join(LANGUAGE_EXTENSIONS)} but json, yaml)")
    for i, lang in enumerate(src.languages):
        check_language(f"source.languages[{i}]", lang)
    for key in ("content_field", "repo_field", "path_field"):
        if not getattr(src, key):
            raise ConfigError(f"source.{key} is empty; give the record field that holds it")
    check_range("source.max_file_bytes", src.max_file_bytes, 1)
    check_range("source.repo_shard_bytes", src.repo_shard_bytes, 1)

    check_filters_config(cfg.filters, "filters")
    check_decontamination_config(cfg.decontamination, "decontamination")
    check_near_dedup_config(cfg.near_dedup, "near_dedup")

    # documents.seed is only hashed (sha256 of its text), so every integer is valid
    check_range("documents.max_chars", cfg.documents.max_chars, 1)
    check_range("documents.partition_bytes", cfg.documents.partition_bytes, 1)
    check_range("workers", cfg.workers, 1)
    check_range("progress_interval_s", cfg.progress_interval_s, 0)
