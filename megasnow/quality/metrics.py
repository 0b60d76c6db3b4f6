"""Binary classification metrics for the annotator: ROC-AUC (tie-aware), accuracy, precision/recall."""
import numpy as np


def roc_auc(labels, scores):
    """Area under the ROC curve = P(score of a random positive > a random negative), ties count 1/2.

    Computed from average ranks (the Mann-Whitney U statistic), so it is exact with tied scores.
    """
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int((labels == 1).sum())
    n_neg = int((labels == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"ROC-AUC needs both classes (got {n_pos} positives, {n_neg} negatives)")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    i = 0
    while i < len(sorted_scores):  # average rank over each run of tied scores
        j = i
        while j + 1 < len(sorted_scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def classification_metrics(labels, probs, threshold=0.5):
    """ROC-AUC plus accuracy / precision / recall of `prob >= threshold` as the positive prediction."""
    labels = np.asarray(labels, dtype=np.int64)
    pred = np.asarray(probs, dtype=np.float64) >= threshold
    tp = int((pred & (labels == 1)).sum())
    fp = int((pred & (labels == 0)).sum())
    fn = int((~pred & (labels == 1)).sum())
    return {
        "roc_auc": roc_auc(labels, probs),
        "accuracy": float((pred == (labels == 1)).mean()),
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "threshold": threshold,
        "n": int(len(labels)),
        "positives": int((labels == 1).sum()),
    }
