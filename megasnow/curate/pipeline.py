"""The curation pipeline: plan shards, run each stage through an executor, skip finished tasks, write the report.

Stages: prepare (ingest, filter, decontaminate; per shard) -> exact dedup (global) -> signatures (per shard)
-> LSH band buckets (per band group) -> candidate pairs (global) -> [shingle sets (per shard) -> true-Jaccard
check (per chunk of pairs)] -> clusters (global) -> route survivors by (language, repo partition) (per shard)
-> documents (per language partition). Every task leaves a done marker holding its result, so a rerun, or a run
that was killed, only does what is missing.
"""
import copy
import glob
import json
import logging
import math
import os
import shutil
import time

import numpy as np
import orjson
import yaml

from megasnow.config import dump_config, to_dict
from megasnow.curate.decontaminate import get_decontaminator
from megasnow.curate.executors import run_tasks, shutdown_executors
from megasnow.curate.fields import check_record_fields
from megasnow.curate.minhash import optimal_param
from megasnow.curate.near_stages import VERIFY_PAIRS_PER_TASK
from megasnow.curate.sources import plan_shards
from megasnow.curate.stages import STAGE_FUNCTIONS
from megasnow.curate.stats import add_totals, merge_into, new_stats, printable
from megasnow.curate.work import describe_reading, prepare_paths, reading
from megasnow.errors import UserError
from megasnow.utils.atomic import atomic_write, atomic_write_text
from megasnow.utils.cli import removed_on_failure

log = logging.getLogger(__name__)
BAND_GROUPS = 8  # LSH bucket tasks; fixed so the work split never depends on the number of workers
# Config keys that decide how the work runs but never what it writes (local and Ray runs with any number of
# workers or threads give the same bytes, tested), so a run may resume with other values.
EXECUTION_KEYS = (("executor",), ("workers",), ("ray_address",), ("near_dedup", "threads"),
                  ("near_dedup", "batch_size"), ("progress_interval_s",))
STAT_KEYS = ("stages", "bad_input", "bad_input_examples", "excluded_dirs")  # the counters merged over tasks


class PipelineError(UserError, RuntimeError):
    """The output folder belongs to a run with a different config or inputs."""


class EmptyInputError(UserError):
    """The inputs hold no source file to curate (raised with strict=True; otherwise a warning in the stats)."""


class CurationTaskError(RuntimeError):
    """A stage task failed; the message names the stage, the task's shard and the file (and record) it was
    reading. The original exception is its __cause__ (in the same process) and is summarised in the message."""


class CurationInputError(CurationTaskError, UserError):
    """A task failed on something the user can fix (an OSError such as a full disk or a permission, or a
    UserError): tools answer it with one `error:` line."""


def describe_task(fn_name, task):
    """'prepare_shard of shard 00003 (/data/b.jsonl)': the task and its input, for error messages."""
    shard = task.get("shard")
    if isinstance(shard, dict):
        if shard["kind"] == "records":
            source = shard["path"]
        else:
            names = ", ".join(shard["repos"][:3]) + (", ..." if len(shard["repos"]) > 3 else "")
            source = f"{len(shard['repos'])} repositories under {shard['root']}: {names}"
        return f"{fn_name} of shard {shard['name']} ({printable(source)})"
    if isinstance(shard, str):
        return f"{fn_name} of shard {shard}"
    key = task.get("key") or (f"{task['lang']}-{task['partition']:05d}" if "lang" in task else None)
    return f"{fn_name}" + (f" ({key})" if key else "")


def run_marked(item):
    """Executor entry point: run one stage task and then write its done marker (the task result as JSON).

    Any failure is raised as CurationTaskError naming the task, its shard and the file it was reading.
    """
    fn_name, task, marker = item
    reading(None)
    try:
        result = STAGE_FUNCTIONS[fn_name](task)
        with atomic_write(marker, "wb") as f:
            f.write(orjson.dumps(result))
    except Exception as e:
        cls = CurationInputError if isinstance(e, (OSError, UserError)) else CurationTaskError
        detail = " ".join(str(e).split())[:500]
        raise cls(f"{describe_task(fn_name, task)} failed{describe_reading()}: {type(e).__name__}: {detail}") from e
    return result


class Runner:
    def __init__(self, cfg, output):
        self.cfg, self.output = cfg, output
        self.work = os.path.join(output, "work")
        self.cfg_dict = to_dict(cfg)
        self.timings = {}
        self.executed = {}
        self.total = {}
        self.fresh = {}  # stage -> indices of the tasks this launch ran (the others were done by an earlier one)

    def stage(self, name, fn_name, tasks, keys):
        """Run the tasks of one stage whose done markers are missing; return all results in task order."""
        t0 = time.time()
        markers = [os.path.join(self.work, "done", name, f"{k}.json") for k in keys]
        results = [None] * len(tasks)
        todo = []
        for i, m in enumerate(markers):
            if os.path.exists(m):
                with open(m, "rb") as f:
                    results[i] = orjson.loads(f.read())
            else:
                todo.append(i)
        items = [(fn_name, {**tasks[i], "cfg": self.cfg_dict, "work": self.work, "output": self.output},
                  markers[i]) for i in todo]
        fresh = run_tasks(run_marked, items, self.cfg.executor, self.cfg.workers,
                          desc=f"{name} ({len(todo)}/{len(tasks)} to run)", ray_address=self.cfg.ray_address)
        for i, r in zip(todo, fresh):
            results[i] = r
        self.timings[name] = round(time.time() - t0, 3)
        self.executed[name] = len(todo)
        self.fresh[name] = todo
        self.total[name] = len(tasks)
        return results


def output_config(cfg_dict):
    """The config without EXECUTION_KEYS: what decides the output bytes."""
    out = copy.deepcopy(cfg_dict)
    for path in EXECUTION_KEYS:
        node = out
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    return out


def _check_or_save_run(output, cfg, inputs):
    """Refuse to resume into an output folder made with another config or input list (naming what differs); else
    record ours. Only the output-deciding config is compared: workers, executor and threads may change between runs.
    """
    run_file = os.path.join(output, "work", "run.json")
    run = {"config": output_config(to_dict(cfg)), "inputs": [os.path.abspath(p) for p in inputs]}
    if os.path.exists(run_file):
        with open(run_file) as f:
            old = json.load(f)
        if isinstance(old.get("config"), str):  # run.json of an older version held the whole config as YAML
            old["config"] = output_config(yaml.safe_load(old["config"]))
        differences = run_differences(old, json.loads(json.dumps(run)))
        if differences:
            raise PipelineError(f"{output} holds a run with a different config or inputs ({'; '.join(differences)})"
                                f"; rerun with the run's values, use a new --output folder, or delete "
                                f"{os.path.join(output, 'work')} to start over")
    else:
        atomic_write_text(run_file, json.dumps(run, indent=1))
    atomic_write_text(os.path.join(output, "config.yaml"), dump_config(cfg))


def _flatten(node, prefix=""):
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for k, v in node.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def run_differences(old, new):
    """What differs between two run.json dicts: `near_dedup.threshold 0.7 -> 0.8` per config key, and the inputs
    added or left out (or their order). [] when they are the same run."""
    before, after = _flatten(old.get("config") or {}), _flatten(new["config"])
    out = [f"{k} {before.get(k, '<absent>')!r} -> {after.get(k, '<absent>')!r}"
           for k in sorted(set(before) | set(after), key=str) if before.get(k, "<absent>") != after.get(k, "<absent>")]
    old_in, new_in = old.get("inputs") or [], new["inputs"]
    if old_in != new_in:
        added = [p for p in new_in if p not in old_in]
        missing = [p for p in old_in if p not in new_in]
        parts = ([f"new {', '.join(map(printable, added))}"] if added else []) + \
            ([f"without {', '.join(map(printable, missing))}"] if missing else [])
        out.append(f"--input changed ({'; '.join(parts) if parts else 'same paths, other order'}; the run used "
                   f"{' '.join(map(printable, old_in))})")
    return out


def _restore_empty(output, created):
    """Remove `output` (created=True) or everything in it."""
    if created:
        shutil.rmtree(output, ignore_errors=True)
        return
    for name in os.listdir(output):
        path = os.path.join(output, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


def _nothing_done(work):
    """True when no task of this output has finished (its folder can go without losing work)."""
    done = os.path.join(work, "done")
    return not any(files for _, _, files in os.walk(done))


def run_pipeline(inputs, output, cfg, strict=False):
    """Curate `inputs` into `output`; returns the stats dict also written to output/stats.json.

    Everything that can be checked before work starts is checked before `output` is touched: a missing input
    (InputNotFoundError), unreadable benchmark files (DecontaminationError), an output folder of another run
    (PipelineError). Inputs without any source file are `stats["empty_input"]`; with strict=True they raise
    EmptyInputError instead, before anything is created when the plan already shows it, else after removing the
    output folder if this call created it. A failing task raises CurationTaskError naming its shard and file.
    """
    t_start = time.time()
    plan_report = new_stats()
    shards = plan_shards(inputs, cfg.source, plan_report)
    if not shards and strict:
        raise EmptyInputError(f"no input files found in {', '.join(map(printable, map(str, inputs)))} "
                              "(drop --strict to get an empty result with a warning)")
    if cfg.decontamination.enabled:
        get_decontaminator(cfg.decontamination)  # reads the benchmark files now: a bad one fails before any work
    check_record_fields(shards, cfg.source)  # a misnamed source.content_field would remove every record
    if os.path.lexists(output) and not os.path.isdir(output):
        raise PipelineError(f"--output {printable(output)} exists and is not a folder; give a new folder name (the "
                            f"documents, stats.json and work/ go inside it)")
    created = not os.path.exists(output)
    was_empty = created or not os.listdir(output)
    try:
        try:
            with removed_on_failure(output):  # a failed start (even a non-user error) leaves nothing behind
                os.makedirs(output, exist_ok=True)
                _check_or_save_run(output, cfg, inputs)
            stats = _run_stages(Runner(cfg, output), shards, plan_report, t_start)
        finally:
            shutdown_executors()  # before any clean-up: no worker writes into the folder any more
    except BaseException:
        # a run that finished no task in a folder that was new or empty has nothing to resume: leave the folder as
        # it was, so the corrected command is not refused as "a run with a different config"
        if was_empty and os.path.isdir(output) and _nothing_done(os.path.join(output, "work")):
            _restore_empty(output, created)
        raise
    files_in = stats["stages"].get("ingest", {}).get("all", {}).get("files_in", 0)
    stats["empty_input"] = files_in == 0
    if stats["empty_input"] and strict:
        if created:
            shutil.rmtree(output, ignore_errors=True)
        raise EmptyInputError(f"no source files found in {', '.join(map(printable, map(str, inputs)))} "
                              "(drop --strict to get an empty result with a warning)")
    atomic_write_text(os.path.join(output, "stats.json"), json.dumps(stats, indent=1, sort_keys=True))
    return stats


def _run_stages(r, shards, plan_report, t_start):
    cfg, output = r.cfg, r.output
    names = [s["name"] for s in shards]
    prepared = r.stage("prepare", "prepare_shard", [{"shard": s} for s in shards], names)
    counts = [p["kept"] for p in prepared]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(int).tolist()
    total = offsets[-1]

    nd = cfg.near_dedup
    bands, rows = (nd.bands, nd.rows) if nd.bands and nd.rows else optimal_param(
        nd.threshold, nd.num_perm, nd.false_positive_weight, nd.false_negative_weight)
    common = {"shards": names, "offsets": offsets[:-1]}
    dedup_report = {}
    for leftover in ("exact.npz", "near.npz"):  # a mask from a run with the stage enabled must not leak in
        if not getattr(cfg, "exact_dedup" if leftover == "exact.npz" else "near_dedup").enabled:
            _remove(os.path.join(r.work, leftover))
    if cfg.exact_dedup.enabled or nd.enabled:
        dedup_report["exact"] = r.stage("exact_dedup", "exact_dedup", [dict(common)], ["all"])[0] \
            if cfg.exact_dedup.enabled else None
        if not cfg.exact_dedup.enabled:
            with atomic_write(os.path.join(r.work, "exact.npz"), "wb") as f:
                np.savez(f, removed=np.zeros(total, dtype=bool))
    if nd.enabled:
        dedup_report["near"] = _near_dedup(r, names, offsets, bands, rows)
        dedup_report["near"].update({"bands": bands, "rows": rows, "threshold": nd.threshold,
                                     "verify_jaccard": nd.verify_jaccard})

    kept_bytes = {}
    for p in prepared:
        for lang, b in p["kept_bytes_by_lang"].items():
            kept_bytes[lang] = kept_bytes.get(lang, 0) + b
    partitions = {lang: max(1, math.ceil(b / cfg.documents.partition_bytes)) for lang, b in kept_bytes.items()}
    routed = r.stage("route", "route_shard", [{"shard": n, "offset": o, "partitions": partitions}
                                              for n, o in zip(names, offsets[:-1])], names)
    doc_tasks = []
    for lang in sorted(partitions):
        for part in range(partitions[lang]):
            if glob.glob(os.path.join(r.work, "grouped", lang, f"{part:05d}", "*.jsonl")):
                doc_tasks.append({"lang": lang, "partition": part})
    documents = r.stage("documents", "build_documents", doc_tasks,
                        [f"{t['lang']}-{t['partition']:05d}" for t in doc_tasks])

    stats = new_stats()
    for part in [plan_report] + prepared + routed + documents:
        merge_into(stats, {k: v for k, v in part.items() if k in STAT_KEYS})
    add_totals(stats)
    # every unreadable input shard is listed (not capped like the examples): each may hide many files
    stats["unreadable_shards"] = [u for p in prepared for u in p.get("unreadable_shards", [])]
    for u in stats["unreadable_shards"]:
        log.warning("input shard %s was unreadable after %d records (kept): %s", u["path"], u["records_read"],
                    u["error"])
    _write_reports(r.work, output, names, offsets, cfg)
    stats["dedup"] = dedup_report
    stats["shards"] = len(shards)
    stats["documents_files"] = sorted(os.path.relpath(p, output)
                                      for p in glob.glob(os.path.join(output, "documents", "*.jsonl")))
    stats["seconds"] = {**r.timings, "total": round(time.time() - t_start, 3)}
    stats["tasks_executed"] = r.executed
    stats["this_launch"] = _this_launch(prepared, r.fresh.get("prepare", []), r.executed, r.total)
    return stats


def _this_launch(prepared, fresh, executed, total):
    """What this launch itself read (the prepare tasks it ran), so a resumed run reports its own rate, and how many
    tasks of each kind an earlier launch had finished."""
    mine = new_stats()
    for i in fresh:
        merge_into(mine, {k: v for k, v in prepared[i].items() if k in STAT_KEYS})
    add_totals(mine)
    ingest = mine["stages"].get("ingest", {}).get("all", {})
    return {"files_in": ingest.get("files_in", 0), "bytes_in": ingest.get("bytes_in", 0),
            "prepare_tasks": len(fresh), "prepare_tasks_done_before": len(prepared) - len(fresh),
            "tasks_run": sum(executed.values()), "tasks_done_before": sum(total.values()) - sum(executed.values())}


def _near_dedup(r, names, offsets, bands, rows):
    """The near-dedup stages; returns the clusters task's result (pair counts, removed, clusters)."""
    nd = r.cfg.near_dedup
    common = {"shards": names, "offsets": offsets[:-1]}
    r.stage("signatures", "signature_shard", [{"shard": n, "bands": bands, "rows": rows} for n in names], names)
    step = math.ceil(bands / min(BAND_GROUPS, bands))
    groups = [(s, min(s + step, bands)) for s in range(0, bands, step)]
    keys = [f"bands-{a:03d}-{b:03d}" for a, b in groups]
    r.stage("buckets", "band_edges", [{**common, "start": a, "stop": b, "key": k}
                                     for (a, b), k in zip(groups, keys)], keys)
    pairs = r.stage("candidates", "merge_candidates", [{}], ["all"])[0]["candidate_pairs"]
    verify_keys = []
    if nd.verify_jaccard:
        r.stage("shingles", "shingle_shard", [{"shard": n, "offset": offsets[i], "count": offsets[i + 1] - offsets[i]}
                                              for i, n in enumerate(names)], names)
        chunks = [(a, min(a + VERIFY_PAIRS_PER_TASK, pairs)) for a in range(0, pairs, VERIFY_PAIRS_PER_TASK)]
        verify_keys = [f"pairs-{a:012d}" for a, _ in chunks]
        r.stage("verify", "verify_pairs", [{**common, "total": offsets[-1], "start": a, "stop": b, "key": k}
                                           for (a, b), k in zip(chunks, verify_keys)], verify_keys)
    return r.stage("clusters", "cluster_near", [{**common, "verify_keys": verify_keys}], ["all"])[0]


def _remove(path):
    if os.path.exists(path):
        os.unlink(path)


def _write_reports(work, output, names, offsets, cfg):
    """duplicates.jsonl (one cluster a line, the kept file first) and decontamination.jsonl (one removal a line)."""
    clusters = []
    for kind, fname in (("exact", "exact_clusters.json"), ("near", "near_clusters.json")):
        path = os.path.join(work, fname)
        enabled = cfg.exact_dedup.enabled if kind == "exact" else cfg.near_dedup.enabled
        if enabled and os.path.exists(path):
            with open(path, "rb") as f:
                clusters += [(kind, kept, removed) for kept, removed in orjson.loads(f.read())]
    needed = sorted({i for _, k, rm in clusters for i in [k, *rm]})
    info = _lookup(work, names, offsets, needed)
    with atomic_write(os.path.join(output, "duplicates.jsonl"), "wb") as out:
        for kind, kept, removed in clusters:
            out.write(orjson.dumps({"kind": kind, "kept": info[kept], "removed": [info[i] for i in removed]}) + b"\n")
    with atomic_write(os.path.join(output, "decontamination.jsonl"), "wb") as out:
        for n in names:
            with open(prepare_paths(work, n)["decon"], "rb") as f:
                out.write(f.read())


def _lookup(work, names, offsets, indices):
    """{global index: {id, repo, path, stars}} read from the shards' meta files."""
    info = {}
    indices = np.asarray(indices, dtype=np.int64)
    for s, name in enumerate(names):
        lo, hi = offsets[s], offsets[s + 1]
        mine = indices[(indices >= lo) & (indices < hi)]
        if len(mine) == 0:
            continue
        meta = np.load(prepare_paths(work, name)["meta"])
        ids, repos, paths, stars = meta["id"], meta["repo"], meta["path"], meta["stars"]
        for g in mine.tolist():
            k = g - lo
            info[g] = {"id": str(ids[k]), "repo": str(repos[k]), "path": str(paths[k]),
                       "stars": None if stars[k] < 0 else int(stars[k])}
    return info
