"""The report's PNG plots (matplotlib, Agg): loss per phase, benchmark-solution loss per arm with seed spread, the
annotators' ROC curves and the selected language mix against phase 1's. Each function writes one file atomically."""
from megasnow.utils.atomic import atomic_write

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    plt = _pyplot()
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)
    return path


def plot_phase_losses(path, curves, title):
    """curves: list of {"label", "color"?, "train": [(x, loss)], "eval": [(x, loss)]}; x in tokens or steps."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, c in enumerate(curves):
        color = c.get("color") or COLORS[i % len(COLORS)]
        if c["train"]:
            ax.plot(*zip(*c["train"]), color=color, linewidth=0.8, alpha=c.get("alpha", 0.9), label=c["label"])
        if c["eval"]:
            ax.plot(*zip(*c["eval"]), "o", color=color, markersize=3.5, markeredgecolor="black", markeredgewidth=0.4,
                    label=f"{c['label']}: held-out" if c.get("legend_eval", True) else None)
    ax.set_xlabel(curves[0].get("xlabel", "tokens trained") if curves else "tokens trained")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_benchmark_losses(path, bench, curves, finals, base_value, title):
    """Left: `bench` solution loss along each run (curves: {"label", "points": {step: [values over seeds]}}), mean
    with a min-max band. Right (when `finals`): the final value of each arm, one dot per seed, mean +- std bars,
    the phase-1 checkpoint's value dashed."""
    plt = _pyplot()
    ncols = 2 if finals else 1
    fig, axes = plt.subplots(1, ncols, figsize=(11 if finals else 7, 4.3), squeeze=False)
    ax = axes[0][0]
    for i, c in enumerate(curves):
        xs = sorted(c["points"])
        if not xs:
            continue
        ys = [c["points"][x] for x in xs]
        mean = [sum(v) / len(v) for v in ys]
        color = COLORS[i % len(COLORS)]
        ax.plot(xs, mean, "-o", color=color, markersize=3, linewidth=1.2, label=c["label"])
        if any(len(v) > 1 for v in ys):
            ax.fill_between(xs, [min(v) for v in ys], [max(v) for v in ys], color=color, alpha=0.2)
    ax.set_xlabel(curves[0].get("xlabel", "optimizer step") if curves else "optimizer step")
    ax.set_ylabel(f"{bench} solution loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if finals:
        ax = axes[0][1]
        names = list(finals)
        for i, name in enumerate(names):
            vals = finals[name]
            color = COLORS[i % len(COLORS)]  # the same order and colours as the curves on the left
            ax.plot([i] * len(vals), vals, "o", color=color, alpha=0.6, markersize=5)
            if vals:
                mean = sum(vals) / len(vals)
                std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
                ax.errorbar([i + 0.15], [mean], yerr=[std], fmt="s", color="black", capsize=4, markersize=4)
        if base_value is not None:
            ax.axhline(base_value, color="grey", linestyle="--", linewidth=1, label="phase-1 checkpoint")
            ax.legend(fontsize=7)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=15, fontsize=8)
        ax.set_ylabel(f"final {bench} solution loss")
        ax.set_title("per arm: seeds (dots), mean +- std (squares)")
        ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_roc(path, curves, title):
    """curves: list of {"label", "fpr", "tpr", "auc"}."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for i, c in enumerate(curves):
        ax.plot(c["fpr"], c["tpr"], color=COLORS[i % len(COLORS)], linewidth=1.5,
                label=f"{c['label']} (AUC {c['auc']:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", linewidth=1)
    ax.set_xlabel("false positive rate (random phase-1 files)")
    ax.set_ylabel("true positive rate (benchmark solutions)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_language_mix(path, phase1_shares, selections, title):
    """phase1_shares: {lang: share}; selections: {label: {lang: share}}. Grouped bars in percent."""
    plt = _pyplot()
    langs = sorted(phase1_shares)
    groups = [("phase 1", phase1_shares)] + list(selections.items())
    width = 0.8 / len(groups)
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(langs) + 2), 4))
    for g, (label, shares) in enumerate(groups):
        xs = [i + (g - (len(groups) - 1) / 2) * width for i in range(len(langs))]
        ax.bar(xs, [100 * shares.get(lang, 0.0) for lang in langs], width, label=label,
               color="lightgrey" if g == 0 else COLORS[(g - 1) % len(COLORS)], edgecolor="black", linewidth=0.4)
    ax.set_xticks(range(len(langs)))
    ax.set_xticklabels(langs)
    ax.set_ylabel("share of tokens (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return _save(fig, path)
