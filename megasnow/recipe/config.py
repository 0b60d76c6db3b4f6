"""The ablation runner's config (tools/recipe_ablation.py run CONFIG.yaml [key.sub=value ...]): data, annotators,
the shared training settings, phase 1, the continued-pretraining arms, the measures and how it runs."""
import copy
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from megasnow.config import ConfigError, describe_config, load_config, path_from_yaml_folder
from megasnow.errors import UserError
from megasnow.generation.protocol import SamplingParamError, checked_sampling_params
from megasnow.train.config import ScheduleSection

# Sections of a megasnow.train config that the runner writes itself (per run); `trainer` may not set them.
RUNNER_OWNED = {"phases": None, "checkpoint": None, "log": None, "eval": None,
                "data": ("tokenizer", "blend", "valid_blend", "valid_fraction", "seed")}


def _token_count(text):
    from megasnow.quality.budget import parse_token_count

    return parse_token_count(text)


def _help(text, default=None, factory=None, parse=None):
    metadata = {"help": text, **({"parse": parse} if parse else {})}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class DataSection:
    tokenizer: str = _help("the training tokenizer: SentencePiece .model or HF tokenizer.json", "")
    phase1: list[str] = _help("curated phase-1 document shards (JSONL/Parquet with `text` and `lang`): phase-1 "
                              "training data, the pool that selection and the random arm draw from, the annotator's "
                              "negatives", factory=list)
    valid: list[str] = _help("held-out documents of the phase-1 distribution (never trained on): the held-out loss",
                             factory=list)
    text_field: str = "text"


@dataclass
class PositiveSpec:
    """One positive source of an annotator (megasnow.quality.training_data.PositiveSource)."""
    paths: list[str] = field(default_factory=list)
    kind: Literal["code", "instruction"] = "code"
    text_field: str = "text"
    problem_field: str = "problem"
    solution_field: str = "solution"
    comment_prefix: str = "# "
    limit: int | None = None


@dataclass
class AnnotatorSpec:
    name: str = _help("the annotator's name (arms name it as selected@NAME)", "annotator")
    folder: str | None = _help("an annotator folder trained elsewhere (tools/annotate.py train); then `positives` "
                               "and the training keys are not used")
    positives: list[PositiveSpec] = _help("positive sources (never evaluation benchmarks: megasnow.quality's builder "
                                          "is used)", factory=list)
    mode: Literal["frozen", "full"] = "frozen"
    encoder: str | None = _help("HF encoder folder (None: the bundled all-MiniLM-L6-v2)")
    max_length: int = _help("encoder window in tokens (training and three-window scoring)", 256)
    heldout_fraction: float = 0.1
    seed: int = 0


@dataclass
class BaseSection:
    checkpoint: str | None = _help("an existing phase-1 checkpoint (run folder or step folder) to continue from; "
                                   "None: train phase 1 here on data.phase1")
    steps: int = _help("phase-1 optimizer steps (when trained here)", 0)
    schedule: ScheduleSection = _help("phase-1 LR schedule", factory=ScheduleSection)


@dataclass
class AblationSection:
    budget_tokens: int = _help("tokens of the selected set (the paper's 12.5B; 12.5B, 300M, 40k or an integer, as "
                               "annotate.py --budget-tokens), counted with data.tokenizer", 0,
                               parse=_token_count)
    repeats: int = _help("passes over the selected set (the paper's 4); every arm trains repeats x budget tokens", 4)
    arms: list[str] = _help("selected (top budget x repeats), random (random phase-1 documents, budget x repeats, "
                            "phase-1 language mix, drawn per seed), selected_once (top repeats x budget, once), "
                            "selected@NAME (annotator NAME's top budget x repeats)",
                            factory=lambda: ["selected", "random", "selected_once"])
    seeds: list[int] = _help("one run per arm and seed: the seed sets the sample order (data.seed) and the random "
                             "arm's draw", factory=lambda: [0, 1, 2])
    steps: int | None = _help("optimizer steps of every arm (None: (repeats x budget_tokens - 1) // seq_len // "
                              "global_batch_size, which every arm's data can fill)")
    schedule: ScheduleSection = _help("continued-pretraining LR schedule (the paper: re-warm from 0, linear to 0)",
                                      factory=lambda: ScheduleSection(style="linear", max_lr=5.3e-4, min_lr=0.0,
                                                                      warmup_steps=10))
    optimizer_state: Literal["reset", "carry"] = _help("AdamW moments at the start of continued training (reset: "
                                                       "the base checkpoint's are not loaded)", "reset")
    mix_tolerance_pp: float = _help("largest language-share deviation of a selection before it is flagged", 5.0)


@dataclass
class MeasureSection:
    benchmarks: list[str] = _help("'humaneval' and/or EvalPlus/HumanEval/MBPP-schema files: solution loss and the "
                                  "annotator's ROC-AUC", factory=lambda: ["humaneval"])
    pass_at_1: bool = _help("also greedy pass@1 of every final checkpoint (tiny models score 0)", False)
    pass_at_1_tasks: int = _help("tasks of the first benchmark scored for pass@1 (0: all)", 20)
    pass_at_1_max_tokens: int = 128
    curve_points: int = _help("held-out and benchmark-loss evaluations during each run (plus the end)", 4)
    alignment_random_files: int = _help("random phase-1 files (not seen in annotator training) against the "
                                        "benchmark solutions for ROC-AUC", 500)
    alignment_seed: int = 0


@dataclass
class RunnerSection:
    launcher: Literal["subprocess", "inprocess"] = _help("subprocess: each run is `python -m megasnow.train` "
                                                         "(isolated, logs to train.log); inprocess: in this process "
                                                         "(faster start, tests)", "subprocess")
    command: list[str] = _help("subprocess launcher: the command that trains one run, the run's train.yaml appended "
                               "(empty: python -m megasnow.train; several GPUs: [torchrun, --nproc_per_node=8, -m, "
                               "megasnow.train])", factory=list)
    threads: int = _help("torch threads of training, scoring and measures (1 on a shared CPU)", 1)
    device: Literal["cpu", "cuda", "auto"] = "auto"
    checkpoint_interval: int = _help("save every N steps inside a run (resume point; 0: only at the end)", 50)
    keep_checkpoints: bool = _help("keep each finished arm's final checkpoint (false: delete after measuring)", True)
    data_seed: int = _help("data.seed of phase 1; an arm with seed s uses data_seed + 1 + s", 1234)


@dataclass
class AblationConfig:
    data: DataSection = field(default_factory=DataSection)
    annotators: list[AnnotatorSpec] = _help("the first is the one `selected`, `selected_once` and the ROC-AUC use",
                                            factory=list)
    trainer: dict[str, Any] = _help("megasnow.train sections shared by every run: model, data.seq_len, train "
                                    "(global_batch_size, micro_batch_size, ...), optim, parallel", factory=dict)
    base: BaseSection = field(default_factory=BaseSection)
    ablation: AblationSection = field(default_factory=AblationSection)
    measure: MeasureSection = field(default_factory=MeasureSection)
    runner: RunnerSection = field(default_factory=RunnerSection)


def load_ablation_config(yaml_path=None, overrides=()):
    """Parse and check the config; relative paths are taken relative to the YAML's folder when they exist there
    (else relative to the working directory). Raises ConfigError naming the key."""
    if yaml_path is not None and not os.path.isfile(yaml_path):
        raise ConfigError(f"{yaml_path}: no such config file (examples/recipe/*.yaml are examples)")
    cfg = load_config(AblationConfig, yaml_path, overrides)
    if yaml_path:
        _resolve_paths(cfg, os.path.dirname(os.path.abspath(yaml_path)))
    check_ablation_config(cfg)
    return cfg


def _resolve(path, base):
    """Absolute: the runner hands paths to subprocesses started in other folders."""
    path = path_from_yaml_folder(path, base)
    return os.path.abspath(path) if path else path


def _resolve_paths(cfg, base):
    d = cfg.data
    d.tokenizer = _resolve(d.tokenizer, base)
    d.phase1 = [_resolve(p, base) for p in d.phase1]
    d.valid = [_resolve(p, base) for p in d.valid]
    for a in cfg.annotators:
        a.folder = _resolve(a.folder, base) if a.folder else None
        for p in a.positives:
            p.paths = [_resolve(x, base) for x in p.paths]
    if cfg.base.checkpoint:
        cfg.base.checkpoint = _resolve(cfg.base.checkpoint, base)
    cfg.measure.benchmarks = [b if b.lower() == "humaneval" else _resolve(b, base) for b in cfg.measure.benchmarks]


def check_ablation_config(cfg):
    """Refuse what cannot work, before anything is built; messages name the key."""
    d = cfg.data
    if not d.tokenizer:
        raise ConfigError("data.tokenizer is empty: give the training tokenizer (.model or tokenizer.json)")
    if not os.path.exists(d.tokenizer):
        raise ConfigError(f"data.tokenizer: {d.tokenizer} does not exist")
    for key in ("phase1", "valid"):
        if not getattr(d, key):
            raise ConfigError(f"data.{key} is empty: give the {'phase-1' if key == 'phase1' else 'held-out'} "
                              f"document shards")
    if not cfg.annotators:
        raise ConfigError("annotators is empty: give at least one (name + positives, or name + folder)")
    names = [a.name for a in cfg.annotators]
    for i, a in enumerate(cfg.annotators):
        if not a.name or not a.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"annotators[{i}].name {a.name!r}: use letters, digits, '-' and '_'")
        if names.count(a.name) > 1:
            raise ConfigError(f"annotators[{i}].name {a.name!r} is used twice")
        if a.folder is None and not a.positives:
            raise ConfigError(f"annotators[{i}] ({a.name}): give positives (sources of high-quality code) or folder "
                              f"(a trained annotator)")
        if a.folder is not None and not os.path.isdir(a.folder):
            raise ConfigError(f"annotators[{i}].folder: {a.folder} is not a folder")
        if a.max_length < 8:
            raise ConfigError(f"annotators[{i}].max_length must be >= 8, got {a.max_length}")
    ab = cfg.ablation
    if ab.budget_tokens < 1:
        raise ConfigError(f"ablation.budget_tokens must be >= 1, got {ab.budget_tokens}")
    if ab.repeats < 1:
        raise ConfigError(f"ablation.repeats must be >= 1, got {ab.repeats}")
    if not ab.arms:
        raise ConfigError("ablation.arms is empty")
    if not ab.seeds:
        raise ConfigError("ablation.seeds is empty")
    if len(set(ab.seeds)) != len(ab.seeds) or any(s < 0 for s in ab.seeds):
        raise ConfigError(f"ablation.seeds must be distinct integers >= 0, got {ab.seeds}")
    if ab.steps is not None and ab.steps < 1:
        raise ConfigError(f"ablation.steps must be >= 1, got {ab.steps}")
    if cfg.base.checkpoint is None and cfg.base.steps < 1:
        raise ConfigError("base.steps must be >= 1 when phase 1 is trained here (or give base.checkpoint)")
    if cfg.base.checkpoint is not None and not os.path.exists(cfg.base.checkpoint):
        raise ConfigError(f"base.checkpoint: {cfg.base.checkpoint} does not exist")
    m = cfg.measure
    if not m.benchmarks:
        raise ConfigError("measure.benchmarks is empty: name 'humaneval' or a benchmark file")
    if m.curve_points < 0 or m.alignment_random_files < 2 or m.pass_at_1_tasks < 0:
        raise ConfigError("measure.curve_points must be >= 0, measure.alignment_random_files >= 2 and "
                          "measure.pass_at_1_tasks >= 0")
    try:  # pass@1 samples greedily with this many new tokens: SamplingParams' rules, named by key
        checked_sampling_params({"max_tokens": "measure.pass_at_1_max_tokens"}, max_tokens=m.pass_at_1_max_tokens)
    except SamplingParamError as e:
        raise ConfigError(str(e)) from None
    if cfg.runner.threads < 1:
        raise ConfigError(f"runner.threads must be >= 1, got {cfg.runner.threads}")
    check_trainer_section(cfg.trainer)
    from megasnow.recipe.arms import matched_steps, parse_arms

    parse_arms(cfg)  # arm names and the annotators they refer to
    matched_steps(cfg)  # the budget fills at least one global batch


def check_inputs(cfg):
    """Every input file exists and every benchmark parses (before any output is written): InputNotFoundError /
    BenchmarkError / ConfigError naming the key."""
    from megasnow.eval.tasks import load_benchmark
    from megasnow.utils.records import expand_inputs

    def expand(paths, key):
        try:
            expand_inputs(paths)
        except UserError as e:
            raise ConfigError(f"{key}: {e}") from None

    expand(cfg.data.phase1, "data.phase1")
    expand(cfg.data.valid, "data.valid")
    for i, a in enumerate(cfg.annotators):
        if a.folder is None:
            for j, p in enumerate(a.positives):
                expand(p.paths, f"annotators[{i}].positives[{j}].paths")
    for i, spec in enumerate(cfg.measure.benchmarks):
        try:
            load_benchmark(spec)
        except UserError as e:
            raise ConfigError(f"measure.benchmarks[{i}]: {e}") from None


def check_trainer_section(trainer):
    """The `trainer` mapping must be megasnow.train sections the runner does not write itself."""
    for key, sub in RUNNER_OWNED.items():
        if key not in trainer:
            continue
        if sub is None:
            raise ConfigError(f"trainer.{key}: the runner writes this section for every run; remove it")
        if not isinstance(trainer[key], dict):
            continue
        for s in sub:
            if s in trainer[key]:
                raise ConfigError(f"trainer.{key}.{s}: the runner sets this key for every run; remove it")
    from megasnow.config import from_dict
    from megasnow.train.config import TrainConfig

    try:
        from_dict(TrainConfig, copy.deepcopy(trainer), "trainer")
    except ConfigError as e:
        raise ConfigError(str(e)) from None


def help_text():
    lines = ["Config keys (section.key (type) = default):"]
    lines += describe_config(AblationConfig)
    lines += ["", "Each entry of `annotators`:"]
    lines += describe_config(AnnotatorSpec, "annotators[i]")
    lines += describe_config(PositiveSpec, "annotators[i].positives[j]")
    return "\n".join(lines)
