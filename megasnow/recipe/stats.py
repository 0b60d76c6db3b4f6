"""Spread over seeds and arm-vs-arm differences, with a plain verdict on whether a difference is above the noise."""
import math

# A difference counts as real when Welch's two-sided t-test gives p below this (the seeds are few, so the t
# distribution's heavy tails matter: with 3 seeds a side, 2 standard errors is only p ~ 0.1-0.2).
ALPHA = 0.05


def describe(values):
    """{"n", "mean", "std" (sample, ddof=1; None for one value: no spread is measured), "min", "max", "values"} of a
    list of floats."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(vals)
    if not n:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None, "values": []}
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else None
    return {"n": n, "mean": mean, "std": std, "min": min(vals), "max": max(vals), "values": vals}


def compare(a, b, name_a="a", name_b="b"):
    """Difference of means a - b of two seed samples (lists of floats), its standard error
    sqrt(s_a^2/n_a + s_b^2/n_b) (None with one seed on a side: no spread to estimate it from), Welch's t-test
    p-value (scipy; None with fewer than 2 seeds a side or no spread) and a verdict: f"{name_a} lower" /
    f"{name_a} higher" when p < ALPHA, else "within noise"."""
    da, db = describe(a), describe(b)
    if not da["n"] or not db["n"]:
        return {"diff": None, "se": None, "p_welch": None, "verdict": "not measured", "n": [da["n"], db["n"]]}
    diff = da["mean"] - db["mean"]
    se = math.sqrt(da["std"] ** 2 / da["n"] + db["std"] ** 2 / db["n"]) if da["n"] > 1 and db["n"] > 1 else None
    p = None
    if se:
        from scipy.stats import ttest_ind

        p = float(ttest_ind(da["values"], db["values"], equal_var=False).pvalue)
    if da["n"] < 2 or db["n"] < 2:
        verdict = "one seed: spread not measured"
    elif p is None:
        verdict = "within noise" if diff == 0 else (f"{name_a} lower" if diff < 0 else f"{name_a} higher")
    elif p < ALPHA:
        verdict = f"{name_a} lower" if diff < 0 else f"{name_a} higher"
    else:
        verdict = "within noise"
    return {"diff": diff, "se": se, "p_welch": p, "verdict": verdict, "n": [da["n"], db["n"]]}
