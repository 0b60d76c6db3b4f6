"""The synthesis summary: kept/dropped by reason and language, language mix achieved vs target, tokens in/out,
request counts and rates; as JSON (summary.json) and Markdown (summary.md)."""


def summarize(post, seed_plan, generation_files, model):
    """Summary sections from the post-processing result, the seed plan and the drivers' generation stats."""
    total = post["total"]
    kept = total["kept"]
    mix = {}
    for lang in sorted(set(seed_plan.shares) | set(post["languages"])):
        c = post["languages"].get(lang, {})
        mix[lang] = {"target_share": round(seed_plan.shares.get(lang, 0.0), 4),
                     "achieved_share": round(c.get("kept", 0) / kept, 4) if kept else 0.0,
                     "kept": c.get("kept", 0), "requests": c.get("requests", 0)}
    drivers = {"drivers": len(generation_files),
               "asked_last_run": sum(g["asked"] for g in generation_files),
               "retries_last_run": sum(g["retries"] for g in generation_files),
               "failed_last_run": _sum_dicts(g["failed"] for g in generation_files)}
    return {
        "model": model,
        "requests": {"planned": total["requests"], "answered": total["answered"],
                     "not_answered": total["dropped"].get("not_answered", 0), **drivers},
        "outputs": {"generated": total["outputs"], "kept": kept,
                    "dropped": sum(n for r, n in total["dropped"].items() if r != "not_answered"),
                    "dropped_by_reason": {r: n for r, n in sorted(total["dropped"].items()) if r != "not_answered"}},
        "tokens": {"prompt": total["prompt_tokens"], "completion": total["completion_tokens"],
                   "completion_kept": total["kept_completion_tokens"]},
        "language_mix": mix,
        "languages": post["languages"],
        "notes": post["notes"],
        "output_shards": post["output_shards"],
        "dropped_file": post["dropped_file"],
        "reference_read": post["reference_read"],
    }


def _sum_dicts(dicts):
    out = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def _seed_read_line(read):
    """'- seed records: N read from F files, K skipped (first: FILE:LINE: reason), D damaged shards ...'."""
    skipped = read.get("skipped_records", 0)
    line = f"- seed records: {read.get('records', 0)} read from {read.get('files', 0)} files, {skipped} skipped"
    if skipped and read.get("skipped_examples"):
        line += f" (first: {read['skipped_examples'][0]})"
    if read.get("damaged_shards"):
        line += f", {len(read['damaged_shards'])} damaged shards (their readable records kept)"
    return line


def render_summary(s):
    """Markdown for summary.md."""
    lines = ["# Synthesis summary", "", f"- stage: {s['stage']}; output: `{s['output']}`",
             f"- template: {s['template']} (sha {s['template_sha']}); seeds planned: {s['seeds']['planned']}",
             _seed_read_line(s["seeds"].get("read") or {})]
    for g in s.get("generation_this_run") or []:
        failed = sum(g["failed"].values())
        lines.append(f"- driver shard {g['shard']}/{g['num_shards']}: {g['planned']} requests, "
                     f"{g['cached_before']} already answered, asked {g['asked']}: {g['answered']} answered, "
                     f"{failed} failed{' ' + str(g['failed']) if failed else ''}, {g['retries']} retries, {g['requests_per_s']} req/s, "
                     f"{g['output_tokens_per_s']} output tok/s ({g['seconds']} s)")
    if "outputs" in s:
        r, o, t = s["requests"], s["outputs"], s["tokens"]
        lines += [f"- model: {s['model']}",
                  f"- requests: {r['planned']} planned, {r['answered']} answered, {r['not_answered']} not answered",
                  f"- outputs: {o['generated']} generated, {o['kept']} kept, {o['dropped']} dropped",
                  f"- tokens: {t['prompt']:,} prompt, {t['completion']:,} completion "
                  f"({t['completion_kept']:,} in kept outputs)", "",
                  "## Dropped by reason", "", "| reason | outputs |", "|---|---:|"]
        lines += [f"| {reason} | {n} |" for reason, n in o["dropped_by_reason"].items()] or ["| (none) | 0 |"]
        lines += ["", "## Language mix", "",
                  "| language | requests | kept | target share | achieved share |", "|---|---:|---:|---:|---:|"]
        for lang, m in s["language_mix"].items():
            lines.append(f"| {lang} | {m['requests']} | {m['kept']} | {100 * m['target_share']:.1f}% | "
                         f"{100 * m['achieved_share']:.1f}% |")
        lines += ["", "## Outputs", ""] + [f"- `{p}`" for p in s["output_shards"]] + \
                 [f"- dropped outputs with reasons: `{s['dropped_file']}`"]
    lines.append("")
    return "\n".join(lines)
