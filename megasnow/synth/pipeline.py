"""Phase-3 synthesis end to end: seeds -> requests -> backend (cached, resumable) -> post-processing -> JSONL shards.

Stages: `generate` (plan the requests, ask those without a cached answer) and `postprocess` (check, deduplicate,
write data/ and the summary); `all` does both. Scale-out: `execution.num_shards` splits the requests by index;
one driver per shard (`execution.shard_index`, or Ray tasks) writes its own response chunks, and the folders merge
by concatenation into one `postprocess` (`extra_responses`).
"""
import glob
import json
import os
import shutil
import time

from megasnow.config import dump_config, from_dict, to_dict
from megasnow.data.output_check import OutputPathError, check_output_folder, top_missing_folder
from megasnow.errors import UserError
from megasnow.generation.factory import build_backend_from_config
from megasnow.synth.cache import RESPONSES_DIR, ChunkWriter, load_responses
from megasnow.synth.config import SynthConfig
from megasnow.synth.driver import run_requests
from megasnow.synth.plan import plan_requests, shard_of
from megasnow.synth.postprocess import postprocess
from megasnow.synth.report import render_summary, summarize
from megasnow.synth.seeds import check_inputs, plan_seeds
from megasnow.synth.templates import load_template
from megasnow.utils.atomic import atomic_write_text
from megasnow.utils.cli import removed_on_failure, warn

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


def start_backend(cfg, names=None):
    """Build the backend and connect it (URLs checked, model resolved): fails before any output is written. A local
    model that cannot be loaded is named by its key (`names` maps it to what the user typed)."""
    try:
        backend = build_backend_from_config(cfg.backend)
    except UserError as e:
        raise _name_local_model(cfg, e, names) from None
    try:
        backend.start()
    except UserError as e:
        backend.close()
        raise _name_local_model(cfg, e, names) from None
    except BaseException:
        backend.close()
        raise
    return backend


def _name_local_model(cfg, error, names):
    if cfg.backend.kind != "local":
        return error
    return UserError(f"{(names or {}).get('backend.model', 'backend.model')}: {error}")


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
                key = names.get("postprocess.decontamination.benchmarks", "postprocess.decontamination.benchmarks")
                raise UserError(f"{key}: {path!r} is not a file; check the path")


class RequestsRefused(UserError):
    """Every request of this run was refused as bad (HTTP 4xx other than 429, 401/403) and none answered: a config
    mistake a plain rerun meets again. `generation`: the drivers' stats (counts, first messages) for the advice."""

    def __init__(self, generation):
        self.generation = generation
        kinds = {}
        for g in generation:
            for k, n in g["failed"].items():
                kinds[k] = kinds.get(k, 0) + n
        super().__init__(f"every request of this run was refused {kinds}; none answered")


def all_refused(generation):
    """Whether some request of this run failed, none was answered, and every failure is a refusal a rerun meets
    again (protocol.NOT_CURED_BY_RERUN: HTTP 4xx other than 429, 401/403)."""
    from megasnow.generation.protocol import NOT_CURED_BY_RERUN

    return (any(g["failed"] for g in generation) and not any(g["answered"] for g in generation)
            and all(k in NOT_CURED_BY_RERUN for g in generation for k in g["failed"]))


def run_synthesis(cfg, output, stage="all", extra_responses=(), names=None, allow_config_change=False):
    """Run `stage` ('all', 'generate' or 'postprocess') into `output`; returns the summary dict.

    Every input path and `output` are checked before anything is written or asked; `names` maps a config key (or
    "output", "extra_responses", "allow_config_change") to what the user typed for it (e.g. {"seeds.documents":
    "--seeds", "prompt.template": "c.yaml: prompt.template"}) so that the error names it. A failed start (any error
    before the first request) leaves nothing behind in an `output` this call created.

    Raises UserError for bad input; ConfigChangedError when `output` holds answers that were all made with another
    config (unless `allow_config_change`: then a warning, and they are asked again); RequestsRefused when every
    request was refused and none answered (an `output` this call created is removed again)."""
    names = names or {}
    out_flag = names.get("output", "output")
    if stage not in STAGES:
        raise UserError(f"stage must be one of {STAGES}, got {stage!r}")
    if cfg.execution.shard_index is not None and stage == "postprocess":
        raise UserError("execution.shard_index is set: post-process once over all shards (leave it unset and "
                        "pass the drivers' folders with --responses)")
    check_output_folder(output, out_flag)  # a file in the way: refused before any input is read
    created = top_missing_folder(output)  # the top-most folder this run creates (None: `output` exists)
    start = time.perf_counter()
    template = load_template(cfg.prompt, names)  # refused before anything else happens
    check_inputs(cfg.seeds, names)
    if stage in ("all", "postprocess"):
        check_postprocess_inputs(cfg, names)
    check_response_folders(extra_responses, names.get("extra_responses", "extra_responses"))
    if stage == "postprocess" and not (read_run_model([output, *extra_responses]) or cfg.backend.model):
        raise UserError(f"no {RUN_FILE} in {output} or the --responses folders, and backend.model is empty: run the "
                        f"generate stage first (or set backend.model)")
    generating = stage in ("all", "generate")
    backend, warned = None, set()
    try:
        with removed_on_failure(created or output):  # a failed start leaves no new folder behind
            _make_folder(output, out_flag)
            # the URLs are checked before the seeds are read (which may take a while on a large corpus)
            if generating and not _uses_ray(cfg):
                backend = start_backend(cfg, names)
            seed_plan = plan_seeds(cfg.seeds, progress=cfg.execution.progress)
            if stage == "postprocess":  # nothing to ask: the cached answers must fit this config
                planned, answered, model = cached_answers(cfg, seed_plan.seeds, template, output, extra_responses,
                                                          postprocess_only=True)
            else:  # before asking again: answers made with another config are said (or refused), not orphaned
                model = backend.model_name if backend is not None else (read_run_model([output])
                                                                        or cfg.backend.model)
                warned = check_cache_fits(cfg, seed_plan.seeds, template, output, model, allow_config_change,
                                          names.get("allow_config_change", "allow_config_change=True"))
            _prepare_output(cfg, output)
        generation = generate(cfg, output, seed_plan.seeds, template, backend, extra_responses) if generating \
            else []
    finally:
        if backend is not None:
            backend.close()
    if generating and all_refused(generation):  # a config mistake: no summary, nothing left in a new folder
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise RequestsRefused(generation)
    summary = {"stage": stage, "output": os.path.abspath(output), "template": template.name,
               "template_sha": template.sha, "seeds": {"planned": len(seed_plan.seeds), "target": seed_plan.target,
                                                       "available_documents": seed_plan.available,
                                                       "target_shares": seed_plan.shares, "read": seed_plan.read},
               "generation_this_run": generation}
    if stage in ("all", "postprocess"):
        if stage == "all":
            planned, answered, model = cached_answers(cfg, seed_plan.seeds, template, output, extra_responses,
                                                      warned=warned)
        post = postprocess(planned, answered, cfg, template, output, progress=cfg.execution.progress)
        summary.update(summarize(post, seed_plan, _generation_files([output, *extra_responses]), model))
    summary["seconds"] = round(time.perf_counter() - start, 3)
    name = "summary" if stage != "generate" else f"summary-generate-{_tag_of(cfg)}"
    atomic_write_text(os.path.join(output, name + ".json"), json.dumps(summary, indent=1))
    atomic_write_text(os.path.join(output, name + ".md"), render_summary(summary))
    return summary


class ConfigChangedError(UserError):
    """The output folder holds answers that were all made with another config."""


def check_cache_fits(cfg, seeds, template, output, model, allow_config_change=False,
                     allow_flag="allow_config_change=True"):
    """Before asking: refuse (ConfigChangedError naming the keys that differ) an `output` whose cached answers were
    all made with another config (model, template, sampling, seeds), as curate and the trainer refuse a changed
    config in the same output; with `allow_config_change`, warn instead (they stay there, unused, and every request
    is asked again). Returns the folders already warned about. Some answers fitting (e.g. more seeds) passes."""
    recorded = read_run_model([output])
    if recorded is not None and model and recorded != model:
        raise UserError(f"{output} holds answers of model {recorded!r} but the backend serves {model!r}; use another "
                        f"--output (or set backend.model={recorded})")
    ids_by_folder = {}
    load_responses([output], ids_by_folder=ids_by_folder)
    ids = ids_by_folder[output]
    if not ids or not model:
        return set()
    # every shard's requests: drivers of other shards may share this folder (their answers fit this config too)
    if ids & {p.id for p in plan_requests(seeds, template, cfg.sampling, model)}:
        return set()
    differences = _differences(cfg, model, {output: ids})
    if not allow_config_change:
        raise ConfigChangedError(
            f"{output} holds {len(ids)} answers made with another config ({differences}), none of which this run "
            f"would use; rerun with that run's values, use a new --output folder, or pass {allow_flag} to ask every "
            f"request again into this folder (the old answers stay there, unused); nothing changed")
    warn(f"{len(ids)} answers in {output} were made with another config (model/template/sampling/seeds differ: "
         f"{differences}), none used; asking again ({allow_flag})")
    return {output}


def check_response_folders(folders, flag="extra_responses"):
    """Each of `folders` is another driver's output folder: it holds responses/ (UserError naming `flag` else)."""
    for folder in folders:
        if not os.path.isdir(folder):
            raise UserError(f"{flag} {folder}: not a folder (give the --output folder of another synthesize.py "
                            f"driver)")
        if not os.path.isdir(os.path.join(folder, RESPONSES_DIR)):
            raise UserError(f"{flag} {folder}: no {RESPONSES_DIR}/ folder in it: give the --output folder of another "
                            f"synthesize.py driver (it holds {RESPONSES_DIR}/<driver>/chunk-*.jsonl, the cached "
                            f"answers, and {RUN_FILE})")


def cached_answers(cfg, seeds, template, output, extra_responses=(), postprocess_only=False, warned=()):
    """(planned requests, {content id: cached record}, model) for post-processing `output` with the answers cached
    in it and in `extra_responses`.

    A folder whose cached answers all have content ids this config does not plan (another model, template, system
    message, sampling or seed selection) is named in a warning, with the keys its config.yaml sets otherwise. When
    the stage only post-processes and folders hold answers but none fits, that is an error (UserError) before
    anything is written: the run would keep nothing and exit 0, which reads as "the model's answers were all
    dropped" rather than "the wrong answers were given". Folders without any answers only get a warning then."""
    folders = [output, *extra_responses]
    model = read_run_model(folders) or cfg.backend.model
    every = plan_requests(seeds, template, cfg.sampling, model)
    planned = _planned_here(cfg, seeds, template, model, every)
    ids_by_folder = {}
    answered = load_responses(folders, ids_by_folder=ids_by_folder)
    wanted = {p.id for p in planned}
    fitting = {p.id for p in every}  # another shard's answers in a shared folder are not stale
    stale = {f: ids for f, ids in ids_by_folder.items() if ids and not ids & fitting}
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
        if folder in warned:  # said before asking (check_cache_fits)
            continue
        warn(f"{len(ids)} answers in {folder} were made with another config (model/template/sampling/seeds differ: "
             f"{_differences(cfg, model, {folder: ids})}), none used")
    return planned, answered, model


def _planned_here(cfg, seeds, template, model, planned=None):
    """The planned requests of this driver (all of them, or its shard's with execution.shard_index); `planned`:
    plan_requests' result when the caller has it already."""
    planned = plan_requests(seeds, template, cfg.sampling, model) if planned is None else planned
    if cfg.execution.shard_index is not None:
        planned = [p for p in planned if shard_of(p, cfg.execution.num_shards) == cfg.execution.shard_index]
    return planned


# The config sections that enter a request's content id (megasnow.synth.plan.content_id) or choose its seed.
ID_SECTIONS = ("seeds", "prompt", "sampling")


def _differences(cfg, model, folders):
    """What to check for answers cached in `folders` under other content ids: the keys their config.yaml (and the
    model of their run.json) set otherwise than this config, or the list of keys that enter the ids."""
    import yaml

    here = to_dict(cfg)
    defaults = to_dict(SynthConfig())  # a key missing from a run's config.yaml (older than the key) had its default
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


def _make_folder(output, flag="output"):
    """Create `output` (and the folders above it); an OSError no check foresaw (e.g. under /proc) is a UserError."""
    try:
        os.makedirs(output, exist_ok=True)
    except OSError as e:
        raise OutputPathError(f"{flag} {output}: cannot create the folder ({e.strerror or e}); give a folder you "
                              f"can write") from None


def _prepare_output(cfg, output):
    _make_folder(output)
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
