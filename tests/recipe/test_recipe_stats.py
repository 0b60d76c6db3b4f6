"""Seed statistics and the noise verdict of megasnow.recipe.stats, against hand-computed values and scipy."""
import math

import pytest
from scipy.stats import ttest_ind

from megasnow.recipe.stats import compare, describe


def test_describe_values():
    d = describe([1.0, 2.0, 4.0])
    assert d["n"] == 3 and d["mean"] == pytest.approx(7 / 3) and d["min"] == 1.0 and d["max"] == 4.0
    assert d["std"] == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert describe([5.0])["std"] is None  # one seed: no spread measured (printed as n/a, never ± 0)
    assert describe([])["n"] == 0 and describe([float("nan")])["mean"] is None


def test_compare_verdicts_and_welch():
    a, b = [1.00, 1.02, 0.98], [1.50, 1.52, 1.48]
    c = compare(a, b, "sel", "rnd")
    assert c["diff"] == pytest.approx(-0.5)
    assert c["se"] == pytest.approx(math.sqrt(0.02 ** 2 / 3 + 0.02 ** 2 / 3))
    assert c["p_welch"] == pytest.approx(ttest_ind(a, b, equal_var=False).pvalue)
    assert c["verdict"] == "sel lower"
    assert compare(b, a, "sel", "rnd")["verdict"] == "sel higher"
    close = compare([1.0, 1.1, 0.9], [1.02, 1.12, 0.92])
    assert close["verdict"] == "within noise" and close["p_welch"] > 0.05
    # 2.4 standard errors apart with 3 seeds a side is still noise for Welch's test (p ~ 0.13)
    wide = compare([4.96, 4.91, 4.89], [4.98, 5.33, 5.29])
    assert 2 < abs(wide["diff"]) / wide["se"] < 3 and wide["p_welch"] > 0.05 and wide["verdict"] == "within noise"
    one = compare([1.0], [2.0])
    assert one["verdict"] == "one seed: spread not measured" and one["se"] is None and one["diff"] == -1.0
    assert compare([], [1.0])["verdict"] == "not measured"
