"""The synthesis config checks the curation sections it reuses (near_dedup, filters, decontamination) under its own
keys, as curation does, so a bad value is one ConfigError naming `postprocess.*` instead of a traceback later."""
import pytest

from megasnow.config import ConfigError
from megasnow.synth.config import load_synth_config


@pytest.mark.parametrize("override,message", [
    ("postprocess.near_dedup.threshold=1.5", "postprocess.near_dedup.threshold must be in (0, 1), got 1.5"),
    ("postprocess.near_dedup.num_perm=-3", "postprocess.near_dedup.num_perm must be in [1, 4096], got -3"),
    ("postprocess.filters.default.max_line_length=-1",
     "postprocess.filters.default.max_line_length must be >= 1, got -1"),
    ("postprocess.decontamination.ngram=0", "postprocess.decontamination.ngram must be >= 1, got 0"),
    ("postprocess.seed_copy_threshold=0", "postprocess.seed_copy_threshold must be in (0, 1], got 0.0"),
    ("postprocess.seed_copy_ngram=0", "postprocess.seed_copy_ngram must be >= 1, got 0"),
])
def test_postprocess_values_out_of_range_name_their_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_synth_config(None, [override])
    assert str(e.value).startswith(message), str(e.value)


def test_a_misspelled_filter_language_gets_a_suggestion():
    with pytest.raises(ConfigError) as e:
        load_synth_config(None, ["postprocess.filters.languages.pyton={}"])
    assert str(e.value).startswith("postprocess.filters.languages: unknown language 'pyton'; did you mean 'python'?")
