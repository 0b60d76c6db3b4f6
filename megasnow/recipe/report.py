"""The recipe report: one markdown file with PNG plots, from an ablation output folder or a quickstart work folder.

    from megasnow.recipe.report import write_recipe_report
    write_recipe_report(workdir, out_md)        # returns {"markdown", "plots", "layout", "sections"}

Layouts it reads (docs/recipe.md):
- ablation folder (tools/recipe_ablation.py run): plan.json, summary.json (rebuilt from the run folders when
  absent), base/{log/metrics.jsonl,result.json}, arms/<arm>/seed<s>/{log/metrics.jsonl,result.json},
  quality/<annotator>/{alignment.json,annotator/metrics.json,selections/<budget>/selection_report.json},
  quality/random/seed<s>/selections/<budget>/selection_report.json.
- quickstart work folder (examples/quickstart.py): log/metrics.jsonl (the three phases of one run; `benchmark`
  records when eval.benchmark_loss_interval was on), quality/annotator/ (metrics.json), quality/alignment.json
  (computed and cached here when missing and `compute_alignment`: needs phases/phase1.jsonl),
  quality/selection/selection_report.json.
A part whose inputs are missing is reported as missing; the rest is still written.
"""
import json
import os

from megasnow.errors import UserError
from megasnow.recipe import plots
from megasnow.utils.atomic import atomic_write_text


class ReportError(UserError, FileNotFoundError):
    """The folder holds neither an ablation run (plan.json) nor a quickstart run (log/metrics.jsonl)."""


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _f(x, digits=4):
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ms(d, digits=4):
    """'mean ± std [min, max]' of a stats.describe dict."""
    if not d or not d.get("n"):
        return "n/a"
    if d["n"] == 1:
        return _f(d["mean"], digits)
    return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f} [{d['min']:.{digits}f}, {d['max']:.{digits}f}]"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ metrics readers
def read_records(metrics_path):
    """{kind: [records]} of a metrics.jsonl."""
    out = {}
    with open(metrics_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                out.setdefault(rec.get("kind", "train"), []).append(rec)
    return out


def benchmark_names(records):
    names = []
    for r in records.get("benchmark", []):
        for k in r:
            if k.endswith("_loss") and k[:-5] not in names:
                names.append(k[:-5])
    return names


def phase_rows(records):
    """Per phase, in order: {"phase", "first_step", "last_step", "tokens" (the run's cumulative count at the phase's
    last record), "phase_tokens" (trained in this phase: tokens minus the previous phase's), "train_first",
    "train_last", "eval_last", "benchmark_last": {name: loss}} from one run's records (read_records)."""
    rows = {}
    for r in records.get("train", []):
        row = rows.setdefault(r["phase"], {"phase": r["phase"], "first_step": r["step"], "train_first": r["loss"],
                                           "eval_last": None, "benchmark_last": {}})
        row.update(last_step=r["step"], train_last=r["loss"], tokens=r["tokens"])
    for r in records.get("eval", []):
        if r.get("phase") in rows:
            rows[r["phase"]]["eval_last"] = r["loss"]
    for r in records.get("benchmark", []):
        if r.get("phase") in rows:
            for k, v in r.items():
                if k.endswith("_loss"):
                    rows[r["phase"]]["benchmark_last"][k[:-5]] = v
    out, before = list(rows.values()), 0
    for row in out:
        row["phase_tokens"] = row["tokens"] - before
        before = row["tokens"]
    return out


def _phase_table(named_records, benches):
    header = ["run", "phase", "steps", "tokens in this phase", "tokens since the run's start",
              "train loss first → last", "held-out loss (last in-run eval)"]
    header += [f"{b} solution loss (last in-run)" for b in benches]
    rows = []
    for name, records in named_records:
        for p in phase_rows(records):
            rows.append([name, p["phase"], f"{p['first_step']}–{p['last_step']}", f"{p['phase_tokens']:,}",
                         f"{p['tokens']:,}",
                         f"{p['train_first']:.4f} → {p['train_last']:.4f}", _f(p["eval_last"])]
                        + [_f(p["benchmark_last"].get(b)) for b in benches])
    return _table(header, rows)


# ------------------------------------------------------------------------------------------------ shared sections
def _heldout_text(name, metrics):
    held = (metrics or {}).get("heldout") or {}
    if held.get("roc_auc") is None:
        return None
    return (f"`{name}`: the annotator's own held-out ROC-AUC (its training split: positives vs phase-1 documents, "
            f"not benchmark solutions): {held['roc_auc']:.4f} (n={held.get('n', 'n/a')})")


def _alignment_section(entries, png, lines, plot_list, why_missing="", annotators=()):
    """entries: list of (annotator name, alignment dict, annotator metrics.json dict or None). With no entry,
    `why_missing` says why the benchmark ROC-AUC was not measured and `annotators` ((name, metrics.json dict or None))
    give each annotator's own held-out ROC-AUC where it was recorded."""
    lines.append("## Annotator alignment: held-out benchmark solutions vs random phase-1 files\n")
    if not entries:
        lines.append(f"_The annotator's ROC-AUC on benchmark solutions was not measured (no alignment.json): "
                     f"{why_missing or 'not computed'}._\n")
        held = [t for t in (_heldout_text(n, m) for n, m in annotators) if t]
        lines += [f"- {t}" for t in held]
        if held:
            lines.append("")
        return
    rows, curves = [], []
    for name, al, metrics in entries:
        held = (metrics or {}).get("heldout") or {}
        for bench, r in al["benchmarks"].items():
            rows.append([name, bench, _f(r["roc_auc"]), r["solutions"], al["random_files"], _f(r["mean_score"]),
                         _f(al.get("random_mean_score")), _f(held.get("roc_auc"))])
            if "fpr" in r:
                curves.append({"label": f"{name}: {bench}", "fpr": r["fpr"], "tpr": r["tpr"], "auc": r["roc_auc"]})
    lines.append(_table(["annotator", "benchmark", "ROC-AUC", "solutions", "random files", "mean score (solutions)",
                         "mean score (random)", "training held-out ROC-AUC"], rows))
    held_out = entries[0][1].get("held_out")
    lines.append("")
    if held_out:
        lines.append(f"Held-out set: {held_out}. ROC-AUC by scikit-learn's `roc_auc_score` (equal to "
                     "megasnow.quality's rank statistic); the paper reports that this number tracks pass@1.\n")
    if curves:
        plot_list.append(plots.plot_roc(png, curves, "annotator ROC: benchmark solutions vs random files"))
        lines.append(f"![ROC curves]({os.path.basename(png)})\n")


def _mix_section(selections, png, lines, plot_list, title):
    """selections: list of (label, selection_report dict)."""
    lines.append(f"## {title}\n")
    if not selections:
        lines.append("_No selection_report.json found._\n")
        return
    first = selections[0][1]
    phase1 = {lang: v["phase1_share"] for lang, v in first["languages"].items()}
    header = ["language", "phase-1 share"] + [f"{label} share" for label, _ in selections]
    rows = []
    for lang in sorted(phase1):
        rows.append([lang, f"{100 * phase1[lang]:.2f}%"]
                    + [f"{100 * rep['languages'].get(lang, {}).get('selected_share', 0.0):.2f}%" for _, rep in selections])
    lines.append(_table(header, rows))
    lines.append("")
    lines.append("; ".join(f"{label}: {rep['selected_tokens']:,} tokens in {rep['selected_documents']} of "
                           f"{rep['scored_documents']} documents (budget {rep['budget_tokens']:,}), largest share "
                           f"deviation {rep['max_share_deviation_pp']:.2f} pp" for label, rep in selections) + ".\n")
    plot_list.append(plots.plot_language_mix(png, phase1, {label: {k: v["selected_share"] for k, v in
                                                                    rep["languages"].items()}
                                                           for label, rep in selections}, title))
    lines.append(f"![language mix]({os.path.basename(png)})\n")


# ------------------------------------------------------------------------------------------------ ablation layout
def _ablation_report(workdir, stem, lines, plot_list):
    from megasnow.recipe.runner import summarize

    plan = _read_json(os.path.join(workdir, "plan.json"))
    summary = summarize(workdir)
    benches = list(summary["base"]["benchmark_loss"]) if summary["base"] else []
    if not benches:
        for s in summary["arms"].values():
            benches = list(s["benchmark_loss"])
            break
    lines.append("# Recipe ablation: continued pretraining from one phase-1 checkpoint\n")
    lines.append(f"- Folder: `{workdir}`")
    lines.append(f"- Token matching: {plan['token_matching']} (checked against each run's metrics.jsonl: "
                 f"{'all equal' if summary['tokens_matched'] else 'NOT EQUAL'}).")
    lines.append(f"- Seeds: {plan['seeds']} (a seed sets the sample order, data.seed, and the random arm's draw); "
                 f"runs finished: {summary['runs_finished']} of {summary['runs_planned']}.")
    lines.append(f"- Benchmarks: {', '.join(plan['benchmarks'])} (solution loss: mean per-token cross entropy of each "
                 "canonical solution given its prompt, nats/token; lower is better).")
    lines.append("- Held-out loss: one fixed pass over the held-out phase-1-distribution documents, the same for "
                 "every run.\n")
    for a in plan["arms"]:
        lines.append(f"  - `{a['name']}`: {a['description']}")
    from megasnow.recipe.runner import repetition_warnings

    datasets_path = os.path.join(workdir, "data", "datasets.json")
    datasets = _read_json(datasets_path) if os.path.exists(datasets_path) else None
    for line in repetition_warnings(plan, datasets):
        lines.append(f"- **{line.replace('warning: ', 'Warning: ', 1)}**")
    lines.append("")

    lines.append("## Comparisons (A − B over seeds; a difference counts only where Welch's t-test gives p < 0.05)\n")
    rows = []
    for c in summary["comparisons"]:
        a = summary["arms"][c["a"]]
        b = summary["arms"][c["b"]]
        key = c["measure"]
        if key == "held-out loss":
            sa, sb = a["heldout_loss"], b["heldout_loss"]
        else:
            bench = key[: -len(" solution loss")]
            sa, sb = a["benchmark_loss"][bench], b["benchmark_loss"][bench]
        rows.append([f"{c['a']} vs {c['b']}", key, _ms(sa), _ms(sb), _f(c["diff"]), _f(c["se"]),
                     _f(c["p_welch"], 3), f"**{c['verdict']}**"])
    lines.append(_table(["A vs B", "measure", "A: mean ± std [min, max]", "B: mean ± std [min, max]", "A − B", "SE",
                         "Welch p", "verdict"], rows) if rows else "_No pair of arms to compare yet._")
    lines.append("")

    lines.append("## Final measures per arm (mean ± std [min, max] over seeds)\n")
    header = ["arm", "seeds", "tokens", "held-out loss"] + [f"{b} solution loss" for b in benches]
    has_p1 = any("pass@1" in s for s in summary["arms"].values())
    if has_p1:
        header.append("pass@1")
    rows = []
    if summary["base"]:
        bm = summary["base"]
        rows.append(["phase-1 checkpoint (before)", "-", "-", _f(bm["heldout_loss"])]
                    + [_f(bm["benchmark_loss"].get(b)) for b in benches]
                    + ([_f(next(iter(bm.get("pass@1", {}).values()), None), 3)] if has_p1 else []))
    for name, s in summary["arms"].items():
        row = [name, len(s["seeds"]), ", ".join(f"{t:,}" for t in s["tokens"]), _ms(s["heldout_loss"])]
        row += [_ms(s["benchmark_loss"].get(b)) for b in benches]
        if has_p1:
            row.append(_ms(next(iter(s["pass@1"].values())), 3) if "pass@1" in s else "n/a")
        rows.append(row)
    lines.append(_table(header, rows))
    lines.append("")

    lines.append("## Runs\n")
    rows, named_records = [], []
    base_metrics = os.path.join(workdir, "base", "log", "metrics.jsonl")
    if os.path.exists(base_metrics):
        named_records.append(("base", read_records(base_metrics)))
    for r in plan["runs"]:
        path = os.path.join(workdir, r["folder"], "result.json")
        if not os.path.exists(path):
            rows.append([r["arm"], r["seed"], "not run yet", "", "", "", ""])
            continue
        res = _read_json(path)
        m = res["measures"]
        rows.append([r["arm"], r["seed"], f"{res['tokens']:,}", _f(res.get("final_train_loss")), _f(m["heldout_loss"]),
                     " / ".join(_f(m["benchmark_loss"].get(b)) for b in benches), res.get("seconds_train")])
        mp = os.path.join(workdir, r["folder"], "log", "metrics.jsonl")
        if os.path.exists(mp):
            named_records.append((f"{r['arm']} seed {r['seed']}", read_records(mp)))
    lines.append(_table(["arm", "seed", "tokens", "final train loss", "held-out loss",
                         f"{' / '.join(benches)} solution loss", "training s"], rows))
    lines.append("")

    lines.append("## Loss per phase (from each run's metrics.jsonl)\n")
    lines.append(_phase_table(named_records, benches))
    lines.append("")
    base_tokens, curves = 0, []
    if named_records and named_records[0][0] == "base":
        rec = named_records[0][1]
        train = rec.get("train", [])
        base_tokens = train[-1]["tokens"] if train else 0
        curves.append({"label": "phase 1 (base)", "color": "black", "train": [(r["tokens"], r["loss"]) for r in train],
                       "eval": [(_tokens_at(train, r["step"]), r["loss"]) for r in rec.get("eval", [])]})
    arm_names = [a["name"] for a in plan["arms"]]
    for name, rec in named_records:
        if name == "base":
            continue
        arm = name.rsplit(" seed ", 1)[0]
        i = arm_names.index(arm)
        first = name.endswith(f" seed {plan['seeds'][0]}")
        train = rec.get("train", [])
        curves.append({"label": arm if first else None, "color": plots.COLORS[i % len(plots.COLORS)],
                       "alpha": 0.6, "legend_eval": first,
                       "train": [(base_tokens + r["tokens"], r["loss"]) for r in train],
                       "eval": [(base_tokens + _tokens_at(train, r["step"]), r["loss"]) for r in rec.get("eval", [])]})
    if curves:
        png = f"{stem}_loss.png"
        plot_list.append(plots.plot_phase_losses(png, curves, "training and held-out loss: phase 1, then each arm"))
        lines.append(f"\n![loss per phase]({os.path.basename(png)})\n")

    lines.append("## Benchmark-solution loss per phase and per arm\n")
    base_rec = named_records[0][1] if named_records and named_records[0][0] == "base" else {}
    for b in benches:
        base_final = summary["base"]["benchmark_loss"].get(b) if summary["base"] else None
        start = [r[f"{b}_loss"] for r in base_rec.get("benchmark", []) if f"{b}_loss" in r][-1:]
        bcurves = []
        for arm in arm_names:
            pts = {0: list(start)} if start else {}
            for name, rec in named_records:
                if name.rsplit(" seed ", 1)[0] == arm:
                    for r in rec.get("benchmark", []):
                        if f"{b}_loss" in r:
                            pts.setdefault(r["step"], []).append(r[f"{b}_loss"])
            bcurves.append({"label": arm, "points": pts, "xlabel": "step of continued pretraining (0: phase-1 "
                                                                    "checkpoint)"})
        finals = {}
        for arm in arm_names:
            s = summary["arms"].get(arm)
            if s and b in s["benchmark_loss"]:
                finals[arm] = s["benchmark_loss"][b]["values"]
        png = f"{stem}_benchmark_{_safe(b)}.png"
        plot_list.append(plots.plot_benchmark_losses(png, b, bcurves, finals, base_final,
                                                     f"{b} solution loss during continued pretraining (band: seeds)"))
        lines.append(f"![{b} solution loss]({os.path.basename(png)})\n")
        lines.append("Left: the in-run measurement (packed, every "
                     "eval.benchmark_loss_interval steps), mean over seeds with the min-max band; right: the final "
                     "checkpoints' measure (the tables above).\n")

    entries = []
    for name in plan["annotators"]:
        qdir = os.path.join(workdir, "quality", name)
        if os.path.exists(os.path.join(qdir, "alignment.json")):
            mpath = os.path.join(qdir, "annotator", "metrics.json")
            entries.append((name, _read_json(os.path.join(qdir, "alignment.json")),
                            _read_json(mpath) if os.path.exists(mpath) else None))
    measured = [name for name, _, _ in entries]
    held = []
    for name in plan["annotators"]:
        mpath = os.path.join(workdir, "quality", name, "annotator", "metrics.json")
        held.append((name, _read_json(mpath) if os.path.exists(mpath) else None))
    _alignment_section(entries, f"{stem}_roc.png", lines, plot_list,
                       "the run has not reached it yet (tools/recipe_ablation.py run measures it after scoring)",
                       [h for h in held if h[0] not in measured])

    selections, seen = [], set()
    for r in plan["runs"]:
        arm = next(a for a in plan["arms"] if a["name"] == r["arm"])
        if arm["source"] == "random":
            if r["seed"] != plan["seeds"][0]:
                continue
            path = os.path.join(workdir, "quality", "random", f"seed{r['seed']}", "selections",
                                str(arm["budget_tokens"]), "selection_report.json")
            label = f"random (seed {r['seed']})"
        else:
            path = os.path.join(workdir, "quality", arm["annotator"], "selections", str(arm["budget_tokens"]),
                                "selection_report.json")
            label = f"{arm['annotator']} top {arm['budget_tokens']:,}"
        if path not in seen and os.path.exists(path):
            seen.add(path)
            selections.append((label, _read_json(path)))
    _mix_section(selections, f"{stem}_language_mix.png", lines, plot_list, "Selected language mix vs phase 1")
    return summary


def _tokens_at(train, step):
    for r in train:
        if r["step"] == step:
            return r["tokens"]
    return train[-1]["tokens"] if train else 0


def _safe(name):
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


# ------------------------------------------------------------------------------------------------ quickstart layout
def _quickstart_report(workdir, stem, lines, plot_list, compute_alignment, num_random, benchmarks):
    metrics = os.path.join(workdir, "log", "metrics.jsonl")
    records = read_records(metrics)
    benches = benchmark_names(records)
    lines.append("# Recipe report: the quickstart's three phases\n")
    lines.append(f"- Folder: `{workdir}`; metrics: `log/metrics.jsonl`.\n")
    lines.append("## Loss per phase\n")
    lines.append(_phase_table([("quickstart", records)], benches))
    lines.append("")
    train = records.get("train", [])
    curves = []
    for i, phase in enumerate(dict.fromkeys(r["phase"] for r in train)):
        curves.append({"label": phase, "xlabel": "optimizer step",
                       "train": [(r["step"], r["loss"]) for r in train if r["phase"] == phase],
                       "eval": [(r["step"], r["loss"]) for r in records.get("eval", []) if r.get("phase") == phase]})
    if curves:
        png = f"{stem}_loss.png"
        plot_list.append(plots.plot_phase_losses(png, curves, "training and held-out loss per phase"))
        lines.append(f"![loss per phase]({os.path.basename(png)})\n")
    lines.append("## Benchmark-solution loss per phase\n")
    if benches:
        for b in benches:
            bcurves = []
            for phase in dict.fromkeys(r["phase"] for r in train):
                pts = {r["step"]: [r[f"{b}_loss"]] for r in records["benchmark"]
                       if r.get("phase") == phase and f"{b}_loss" in r}
                bcurves.append({"label": phase, "points": pts})
            png = f"{stem}_benchmark_{_safe(b)}.png"
            plot_list.append(plots.plot_benchmark_losses(png, b, bcurves, None, None, f"{b} solution loss per phase"))
            lines.append(f"![{b} solution loss]({os.path.basename(png)})\n")
    else:
        lines.append("_No `benchmark` records in metrics.jsonl: train with eval.benchmark_loss_interval > 0 to log the "
                     "benchmark-solution loss._\n")

    qdir = os.path.join(workdir, "quality")
    annotator = os.path.join(qdir, "annotator")
    al_path = os.path.join(qdir, "alignment.json")
    corpus = os.path.join(workdir, "phases", "phase1.jsonl")
    has_annotator = os.path.exists(os.path.join(annotator, "annotator.json"))
    if not os.path.exists(al_path) and compute_alignment and has_annotator and os.path.exists(corpus):
        from megasnow.recipe.alignment import measure_alignment

        measure_alignment(annotator, [corpus], list(benchmarks), al_path, num_random=num_random)
    mpath = os.path.join(annotator, "metrics.json")
    metrics = _read_json(mpath) if os.path.exists(mpath) else None
    entries = [("annotator", _read_json(al_path), metrics)] if os.path.exists(al_path) else []
    if not compute_alignment:
        why = ("skipped on request (compute_alignment=False: the quickstart's --ci, or recipe_ablation.py report "
               "--no-alignment); `tools/recipe_ablation.py report FOLDER` measures it (~30 s on 2 cores)")
    elif not has_annotator:
        why = f"no annotator in {annotator}"
    else:
        why = f"its phase-1 documents ({corpus}) are missing"
    _alignment_section(entries, f"{stem}_roc.png", lines, plot_list, why, [("annotator", metrics)])
    sel = os.path.join(qdir, "selection", "selection_report.json")
    selections = [("phase 2 (selected)", _read_json(sel))] if os.path.exists(sel) else []
    _mix_section(selections, f"{stem}_language_mix.png", lines, plot_list, "Phase 2's language mix vs phase 1")
    return None


# ------------------------------------------------------------------------------------------------ entry point
def write_recipe_report(workdir, out_md=None, compute_alignment=True, num_random=200, benchmarks=("humaneval",)):
    """Write the recipe report for `workdir` (an ablation output folder or a quickstart work folder) to `out_md`
    (default <workdir>/recipe_report.md) and its PNGs beside it as <out_md stem>_*.png.

    compute_alignment / num_random / benchmarks: quickstart layout only: when quality/alignment.json is missing,
    measure the annotator's ROC-AUC on `benchmarks` vs `num_random` random phase-1 files and cache it there.
    Returns {"markdown": path, "plots": [paths], "layout": "ablation" | "quickstart", "summary": dict or None}.
    Raises ReportError (a FileNotFoundError) when `workdir` holds neither layout."""
    workdir = os.path.abspath(workdir)
    if not os.path.isdir(workdir):
        raise ReportError(f"{workdir}: {'is a file, not a folder' if os.path.exists(workdir) else 'does not exist'}; "
                          f"give the --output folder of a recipe_ablation.py run (or a quickstart work folder)")
    out_md = os.path.abspath(out_md or os.path.join(workdir, "recipe_report.md"))
    stem = out_md[:-3] if out_md.endswith(".md") else out_md
    lines, plot_list = [], []
    if os.path.exists(os.path.join(workdir, "plan.json")):
        layout = "ablation"
        summary = _ablation_report(workdir, stem, lines, plot_list)
    elif os.path.exists(os.path.join(workdir, "log", "metrics.jsonl")):
        layout = "quickstart"
        summary = _quickstart_report(workdir, stem, lines, plot_list, compute_alignment, num_random, benchmarks)
    else:
        raise ReportError(f"{workdir}: neither an ablation folder (plan.json) nor a quickstart work folder "
                                f"(log/metrics.jsonl)")
    atomic_write_text(out_md, "\n".join(lines).rstrip() + "\n")
    return {"markdown": out_md, "plots": plot_list, "layout": layout, "summary": summary}
