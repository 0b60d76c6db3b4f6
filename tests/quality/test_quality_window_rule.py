"""The three-window rule, length-sorted batching, ROC-AUC and bad-document detection (no model needed)."""
import numpy as np
import pytest

from megasnow.quality.documents import check_document_text
from megasnow.quality.metrics import classification_metrics, roc_auc
from megasnow.quality.score import length_sorted_batches
from megasnow.quality.windows import score_token_lists, window_starts
from tests.conftest import require_anchor


class RecordingScorer:
    """Mock window scorer: a window's score is the token id it starts with (tokens are 0..n-1)."""

    def __init__(self):
        self.calls = []

    def __call__(self, windows):
        self.calls.append([list(w) for w in windows])
        return [float(w[0]) for w in windows]


def test_long_file_uses_top_middle_bottom_windows():
    window, n = 10, 101
    scorer = RecordingScorer()
    (score,) = score_token_lists([list(range(n))], window, scorer)
    (windows,) = scorer.calls  # all windows in ONE call, so the caller can batch across files
    assert windows == [list(range(0, 10)), list(range(45, 55)), list(range(91, 101))]
    assert score == pytest.approx((0 + 45 + 91) / 3)


def test_middle_window_is_centred_and_leans_to_top_on_odd_remainder():
    assert window_starts(20, 10) == [0, 5, 10]  # centred exactly: tokens 5..14 around midpoint 10
    assert window_starts(21, 10) == [0, 5, 11]  # remainder 11: (21 - 10) // 2 = 5, leaning to the top
    assert window_starts(11, 10) == [0, 0, 1]  # overlapping windows still count three times


def test_short_file_scores_once_with_whole_file():
    scorer = RecordingScorer()
    scores = score_token_lists([list(range(10)), list(range(3)), []], 10, scorer)
    assert scorer.calls == [[list(range(10)), list(range(3))]]
    assert scores == [0.0, 0.0, None]  # one window each; an empty token list gets no score


def test_mean_uses_window_scores_of_each_file():
    class ByLength:
        def __call__(self, windows):
            return [sum(w) / 1000.0 for w in windows]

    a, b = list(range(30)), list(range(100, 105))
    scores = score_token_lists([a, b], 10, ByLength())
    expected_a = (sum(range(0, 10)) + sum(range(10, 20)) + sum(range(20, 30))) / 3000.0
    assert scores == pytest.approx([expected_a, sum(b) / 1000.0])


def test_length_sorted_batches_respect_token_budget_and_cover_everything():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 130, size=500).tolist()
    batches = length_sorted_batches(lengths, batch_tokens=1024, max_batch=64)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(500))
    for b in batches:
        assert len(b) <= 64
        assert max(lengths[i] for i in b) * len(b) <= 1024 or len(b) == 1
    longest = [max(lengths[i] for i in b) for b in batches]
    assert longest == sorted(longest, reverse=True)  # longest first: padding stays within a batch's own length


def test_roc_auc_matches_sklearn_with_ties():
    sklearn_metrics = require_anchor("sklearn.metrics", "scikit-learn")
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=300)
    scores = np.round(rng.random(300) + 0.3 * labels, 1)  # rounding creates many ties
    assert roc_auc(labels, scores) == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores), abs=1e-12)
    m = classification_metrics([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1])
    assert (m["accuracy"], m["precision"], m["recall"], m["roc_auc"]) == (0.5, 0.5, 0.5, 0.75)


@pytest.mark.parametrize(
    "value,reason",
    [
        (None, "missing text"),
        ("", "empty"),
        ("  \n\t", "empty"),
        ("int main() {\x00\x00}", "binary"),
        ("".join(chr(i % 20 + 1) for i in range(400)), "binary"),
        (b"\xff\xfe\x00bad", "undecodable"),
        (12345, "non-string"),
        ("\ufffd" * 50 + "x", "undecodable"),
        ("abc\ud800def", "undecodable"),
        ("def f():\n\treturn 1\n", None),
        (b"def f(): pass", None),
    ],
)
def test_document_text_classification(value, reason):
    text, why = check_document_text(value)
    assert why == reason
    assert (text is None) == (reason is not None)
