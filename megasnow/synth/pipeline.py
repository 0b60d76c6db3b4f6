"""Phase-3 synthesis end to end: seeds -> requests -> backend (cached, resumable) -> post-processing -> JSONL shards.

Stages: `generate` (plan the requests, ask those without a cached answer) and `postprocess` (check, deduplicate,
write data/ and the summary); `all` does both. Scale-out: `execution.num_shards` splits the requests by index;
one driver per shard (`execution.shard_index`, or Ray tasks) writes its own response chunks, and the folders merge
by concatenation into one `postprocess` (`extra_responses`).
"""
import glob
import json
import os
import time

from megasnow.config import dump_config, from_dict, to_dict
from megasnow.errors import UserError
from megasnow.generation.factory import build_backend_from_config
from megasnow.synth.cache import ChunkWriter, load_responses
from megasnow.synth.config import SynthConfig
from megasnow.synth.driver import run_requests
from megasnow.synth.plan import plan_requests, shard_of
from megasnow.synth.postprocess import postprocess
from megasnow.synth.report import render_summary, summarize
from megasnow.synth.seeds import check_inputs, plan_seeds
from megasnow.synth.templates import load_template
from megasnow.utils.atomic import atomic_write_text
from megasnow.utils.cli import warn

RUN_FILE = "run.json"
STAGES = ("all", "generate", "postprocess")


def shard_tag(shard, num_shards):
    return f"shard-{shard:05d}-of-{num_shards:05d}"


def read_run_model(folders):
    """The model name recorded by the drivers that wrote `folders` (they must agree), or None."""
    models = {}
    for folder in folders:
        path = os.path.join(folder, RUN_FILE)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                models[path] = json.load(f)["model"]
    if len(set(models.values())) > 1:
        raise UserError(f"the response folders were made with different models: {models}; post-process them "
                        f"separately")
    return next(iter(models.values()), None)


def drive_shard(cfg, output, shard, seeds, template, backend, extra_responses=()):
    """Ask every request of `shard` that has no answer in `output` or `extra_responses`; returns its stats."""
    backend.start()  # connects, checks the URLs and resolves the served model name
    model = backend.model_name
    recorded = read_run_model([output])
    if recorded is not None and recorded != model:
        raise UserError(f"{output} holds answers of model {recorded!r} but the backend serves {model!r}; use another "
                        f"--output (or set backend.model={recorded})")
    atomic_write_text(os.path.join(output, RUN_FILE), json.dumps({"model": model}, indent=1))
    planned = [p for p in plan_requests(seeds, template, cfg.sampling, model)
               if shard_of(p, cfg.execution.num_shards) == shard]
    answered = load_responses([output, *extra_responses])
    todo = [p for p in planned if p.id not in answered]
    tag = shard_tag(shard, cfg.execution.num_shards)
    writer = ChunkWriter(output, tag, cfg.output.flush_every, cfg.output.flush_seconds)
    stats = run_requests(todo, backend, writer, progress=cfg.execution.progress,
                         desc=f"requests ({tag})" if cfg.execution.num_shards > 1 else "requests")
    stats.update({"shard": shard, "num_shards": cfg.execution.num_shards, "planned": len(planned),
                  "cached_before": len(planned) - len(todo), "model": model})
    atomic_write_text(os.path.join(output, f"generation-{tag}.json"), json.dumps(stats, indent=1))
    return stats


def _drive_task(task):
    """One driver shard as an executor task (picklable: the config travels as a dict)."""
    cfg = from_dict(SynthConfig, task["cfg"])
    template = load_template(cfg.prompt)
    seeds = plan_seeds(cfg.seeds, progress=False).seeds
    with build_backend_from_config(cfg.backend) as backend:
        return drive_shard(cfg, task["output"], task["shard"], seeds, template, backend, task["extra"])


def _absolute_paths(d):
    """The config dict with its input paths made absolute (Ray workers may run in another folder)."""
    seeds = d["seeds"]
    seeds["documents"] = [os.path.abspath(p) for p in seeds["documents"]]
    for key in ("scores", "language_stats", "tokenizer"):
        if seeds[key]:
            seeds[key] = os.path.abspath(seeds[key])
    if d["prompt"]["template"] != "default":
        d["prompt"]["template"] = os.path.abspath(d["prompt"]["template"])
    if (d["prompt"]["system"] or "").startswith("@"):
        d["prompt"]["system"] = "@" + os.path.abspath(d["prompt"]["system"][1:])
    return d


def _run_ray(cfg, output, shards, extra_responses):
    from megasnow.curate.executors import init_ray, shutdown_ray

    ray = init_ray(len(shards), cfg.execution.ray_address)
    try:
        remote = ray.remote(num_cpus=1, num_gpus=cfg.execution.ray_gpus_per_shard, max_retries=0)(_drive_task)
        refs = [remote.remote({"cfg": _absolute_paths(to_dict(cfg)), "output": os.path.abspath(output), "shard": s,
                               "extra": [os.path.abspath(e) for e in extra_responses]}) for s in shards]
        return ray.get(refs)
    finally:
        shutdown_ray()


def _shards(cfg):
    ex = cfg.execution
    return [ex.shard_index] if ex.shard_index is not None else list(range(ex.num_shards))


def _uses_ray(cfg):
    return cfg.execution.executor == "ray" and len(_shards(cfg)) > 1


def generate(cfg, output, seeds, template, backend, extra_responses=()):
    """The generate stage for this driver's shards (all of them unless execution.shard_index is set): on Ray, one
    task per shard (each builds its own backend there); else in turn through `backend`."""
    if _uses_ray(cfg):
        return _run_ray(cfg, output, _shards(cfg), extra_responses)
    return [drive_shard(cfg, output, s, seeds, template, backend, extra_responses) for s in _shards(cfg)]


def start_backend(cfg):
    """Build the backend and connect it (URLs checked, model resolved): fails before any output is written."""
    backend = build_backend_from_config(cfg.backend)
    try:
        backend.start()
    except BaseException:
        backend.close()
        raise
    return backend


def check_postprocess_inputs(cfg, names=None):
    """The reference shards and benchmark files of the post-processing exist (UserError naming the key)."""
    from megasnow.utils.records import expand_inputs

    names = names or {}
    pp = cfg.postprocess
    if pp.reference:
        try:
            expand_inputs(pp.reference)
        except UserError as e:
            raise UserError(f"{names.get('postprocess.reference', 'postprocess.reference')}: {e}") from None
    if pp.decontamination.enabled:
        for path in pp.decontamination.benchmarks:
            if not os.path.isfile(path):
                raise UserError(f"postprocess.decontamination.benchmarks: {path!r} is not a file; check the path")


def run_synthesis(cfg, output, stage="all", extra_responses=(), names=None):
    """Run `stage` ('all', 'generate' or 'postprocess') into `output`; returns the summary dict.

    Every input path is checked before anything is written or asked; `names` maps a config key to the flag the
    user set it with (e.g. {"seeds.documents": "--seeds"}) so that the error names what they typed."""
    if stage not in STAGES:
        raise UserError(f"stage must be one of {STAGES}, got {stage!r}")
    if cfg.execution.shard_index is not None and stage == "postprocess":
        raise UserError("execution.shard_index is set: post-process once over all shards (leave it unset and "
                        "pass the drivers' folders with --responses)")
    start = time.perf_counter()
    template = load_template(cfg.prompt)  # refused before anything else happens
    check_inputs(cfg.seeds, names)
    if stage in ("all", "postprocess"):
        check_postprocess_inputs(cfg, names)
    for folder in extra_responses:
        if not os.path.isdir(folder):
            raise UserError(f"--responses {folder}: not a folder (give the --output folder of another driver)")
    if stage == "postprocess" and not (read_run_model([output, *extra_responses]) or cfg.backend.model):
        raise UserError(f"no {RUN_FILE} in {output} or the --responses folders, and backend.model is empty: run the "
                        f"generate stage first (or set backend.model)")
    generating = stage in ("all", "generate")
    # the URLs are checked before the seeds are read (which may take a while on a large corpus)
    backend = start_backend(cfg) if generating and not _uses_ray(cfg) else None
    try:
        seed_plan = plan_seeds(cfg.seeds, progress=cfg.execution.progress)
        if stage == "postprocess":  # nothing to ask: the cached answers must fit this config, checked before writing
            planned, answered, model = cached_answers(cfg, seed_plan.seeds, template, output, extra_responses,
                                                      postprocess_only=True)
        _prepare_output(cfg, output)
        generation = generate(cfg, output, seed_plan.seeds, template, backend, extra_responses) if generating \
            else []
    finally:
        if backend is not None:
            backend.close()
    summary = {"stage": stage, "output": os.path.abspath(output), "template": template.name,
               "template_sha": template.sha, "seeds": {"planned": len(seed_plan.seeds), "target": seed_plan.target,
                                                       "available_documents": seed_plan.available,
                                                       "target_shares": seed_plan.shares, "read": seed_plan.read},
               "generation_this_run": generation}
    if stage in ("all", "postprocess"):
        if stage == "all":
            planned, answered, model = cached_answers(cfg, seed_plan.seeds, template, output, extra_responses)
        post = postprocess(planned, answered, cfg, template, output, progress=cfg.execution.progress)
        summary.update(summarize(post, seed_plan, _generation_files([output, *extra_responses]), model))
    summary["seconds"] = round(time.perf_counter() - start, 3)
    name = "summary" if stage != "generate" else f"summary-generate-{_tag_of(cfg)}"
    atomic_write_text(os.path.join(output, name + ".json"), json.dumps(summary, indent=1))
    atomic_write_text(os.path.join(output, name + ".md"), render_summary(summary))
    return summary


def cached_answers(cfg, seeds, template, output, extra_responses=(), postprocess_only=False):
    """(planned requests, {content id: cached record}, model) for post-processing `output` with the answers cached
    in it and in `extra_responses`.

    A folder whose cached answers all have content ids this config does not plan (another model, template, system
    message, sampling or seed selection) is named in a warning, with the keys its config.yaml sets otherwise. When
    the stage only post-processes and folders hold answers but none fits, that is an error (UserError) before
    anything is written: the run would keep nothing and exit 0, which reads as "the model's answers were all
    dropped" rather than "the wrong answers were given". Folders without any answers only get a warning then."""
    folders = [output, *extra_responses]
    model = read_run_model(folders) or cfg.backend.model
    planned = plan_requests(seeds, template, cfg.sampling, model)
    if cfg.execution.shard_index is not None:  # stage all on one shard: its own requests only
        planned = [p for p in planned if shard_of(p, cfg.execution.num_shards) == cfg.execution.shard_index]
    ids_by_folder = {}
    answered = load_responses(folders, ids_by_folder=ids_by_folder)
    wanted = {p.id for p in planned}
    stale = {f: ids for f, ids in ids_by_folder.items() if ids and not ids & wanted}
    total = len(answered)  # distinct ids: a folder copied into another counts once
    if postprocess_only and planned and total and not wanted & set(answered):
        where = ", ".join(stale)
        raise UserError(f"none of the {total} cached answers in {where} was made with this config (the {len(planned)} "
                        f"planned requests' content ids hash the model, the rendered prompt, sampling and the seed "
                        f"selection; {_differences(cfg, model, stale)}); post-process with the config of the run "
                        f"that made them, or run the generate stage to ask again; nothing written")
    if postprocess_only and planned and not total:
        warn(f"no cached answers in {', '.join(folders)}: nothing to post-process (run the generate stage first, or "
             f"pass the generating drivers' folders with --responses)")
    for folder, ids in stale.items():
        warn(f"{len(ids)} answers in {folder} were made with another config (model/template/sampling/seeds differ: "
             f"{_differences(cfg, model, {folder: ids})}), none used")
    return planned, answered, model


# The config sections that enter a request's content id (megasnow.synth.plan.content_id) or choose its seed.
ID_SECTIONS = ("seeds", "prompt", "sampling")


def _differences(cfg, model, folders):
    """What to check for answers cached in `folders` under other content ids: the keys their config.yaml (and the
    model of their run.json) set otherwise than this config, or the list of keys that enter the ids."""
    import yaml

    here = to_dict(cfg)
    defaults = to_dict(SynthConfig())  # a key a run's config.yaml lacks (written before the key existed) had its default
    found = []
    for folder in folders:
        there_model = read_run_model([folder])
        if there_model is not None and there_model != model:
            found.append(f"model {there_model!r} there, {model!r} here")
        try:
            with open(os.path.join(folder, "config.yaml"), encoding="utf-8") as f:
                there = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError):
            continue
        for section in ID_SECTIONS:
            a, b = there.get(section) or {}, here[section]
            for key in b:
                value = a.get(key, defaults[section].get(key))
                if value != b[key]:
                    found.append(f"{section}.{key} {value!r} there{'' if key in a else ' (unset)'}, {b[key]!r} here")
    found = list(dict.fromkeys(found))
    if not found:
        return ("check backend.model, prompt.template/system, sampling.* and seeds.* against the run that made "
                "them")
    return "; ".join(found[:4]) + (f"; and {len(found) - 4} more" if len(found) > 4 else "")


def _prepare_output(cfg, output):
    os.makedirs(output, exist_ok=True)
    atomic_write_text(os.path.join(output, "config.yaml"), dump_config(cfg))


def _tag_of(cfg):
    ex = cfg.execution
    return shard_tag(ex.shard_index, ex.num_shards) if ex.shard_index is not None else "all"


def _generation_files(folders):
    """The generation stats every driver left in `folders` (their last run each)."""
    out = []
    for folder in folders:
        for path in sorted(glob.glob(os.path.join(glob.escape(folder), "generation-shard-*.json"))):
            with open(path, encoding="utf-8") as f:
                out.append(json.load(f))
    return out
