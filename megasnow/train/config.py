"""The training run's config: one dataclass per section (model, data, parallel, optim, schedule, train,
checkpoint, log, eval) plus the list of curriculum phases; YAML sets it, `key.sub=value` overrides it."""
import contextlib
import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Literal

from megasnow.config import (ConfigError, apply_overrides, describe_config, from_dict, load_config,
                             path_from_yaml_folder, to_dict)


def _help(text, default=None, factory=None):
    if factory is not None:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class ModelSection:
    """A preset from megasnow.model.config.PRESETS, with any field overridden (None = keep the preset's)."""
    preset: str = _help("preset name: snowcoder-1.3b, llama-1b-gqa, llama-1b-untied, tiny, tiny-gqa, tiny-untied",
                        "tiny")
    vocab_size: int | None = _help("None: the tokenizer's vocabulary size (data.tokenizer), else the preset's")
    hidden_size: int | None = None
    ffn_hidden_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    max_seq_len: int | None = _help("None: the preset's, raised to data.seq_len if shorter")
    rope_base: float | None = None
    norm_eps: float | None = None
    tie_embeddings: bool | None = None
    init_std: float | None = None
    kernels: str | None = _help("auto | triton | reference")
    document_mask: bool | None = None
    activation_checkpointing: str | None = _help("none | full | selective")
    make_vocab_size_divisible_by: int | None = None


@dataclass
class BlendItem:
    """One dataset of a phase's blend: an indexed-dataset prefix (PREFIX.bin/.idx), weight, repetitions."""
    path: str = ""
    weight: float = 1.0
    repeat: int | None = None


@dataclass
class FIMSection:
    """Fill-in-the-middle applied to samples as they are read (megasnow.data.fim; docs/datasets.md). Off by default;
    StarCoder trained with rate 0.5, spm_rate 0.5 (the Arctic-SnowCoder paper does not mention FIM)."""
    rate: float = _help("probability that a unit (a file, or a document's piece of a sample) is rearranged; 0: off "
                        "(StarCoder: 0.5)", 0.0)
    spm_rate: float = _help("probability that a rearranged unit is suffix-prefix-middle rather than prefix-suffix-"
                            "middle (StarCoder: 0.5)", 0.5)
    level: Literal["file", "sample"] = _help("file: units end at <file_sep> and the end of document (repository "
                                             "documents, StarCoder2 style); sample: at the end of document only",
                                             "file")
    mask_pad: bool = _help("leave <fim_pad> labels out of the loss (needs train.calculate_per_token_loss); false "
                           "trains on them as StarCoder did (they are rare)", False)


@dataclass
class DataSection:
    tokenizer: str | None = _help("SentencePiece .model, HF tokenizer.json, or an HF tokenizer folder holding "
                                  "tokenizer.json (sets the vocabulary size; copied into checkpoints and HF exports)")
    seq_len: int = _help("tokens per training sequence", 2048)
    seed: int = _help("seed of the document/sample shuffles", 1234)
    eod_id: int | None = _help("end-of-document token id that model.document_mask splits samples at "
                               "(None: the tokenizer's EOD)")
    valid_fraction: float = _help("fraction of each dataset's documents held out for evaluation", 0.0)
    cache_dir: str | None = _help("where dataset index arrays are cached (None: beside the data)")
    num_workers: int | None = _help("DataLoader worker processes reading (and FIM-rearranging) samples ahead of "
                                    "the step (Megatron's --num-workers); None: 2 when training on a GPU, 0 on "
                                    "CPU, where workers would take cores from the step")
    blend: list[BlendItem] = _help("blend of the single phase used when `phases` is empty", factory=list)
    valid_blend: list[BlendItem] = _help("explicit held-out datasets (used instead of the valid split)",
                                         factory=list)
    fim: FIMSection = field(default_factory=FIMSection)


@dataclass
class ParallelSection:
    tensor: int = _help("tensor-parallel size (Megatron's --tensor-model-parallel-size)", 1)
    pipeline: int = _help("pipeline stages (--pipeline-model-parallel-size)", 1)
    virtual_pipeline: int | None = _help("model chunks per pipeline stage, interleaved 1F1B "
                                         "(--virtual-pipeline-model-parallel-size); None: 1")
    pipeline_layers: list[int] | None = _help(
        "layers per pipeline stage in model order, for an uneven split (with virtual_pipeline V: pipeline x V "
        "counts, one per virtual stage); each >= 1, adding up to model.num_layers; None: an equal split")
    sequence_parallel: bool = _help("split norms and dropout along the sequence over the tensor-parallel ranks; "
                                    "with parallel.tensor=1 it is turned off with a warning (as Megatron-LM does)",
                                    False)
    use_distributed_optimizer: bool = False
    overlap_grad_reduce: bool = True
    bucket_size_mb: float = 25.0


@dataclass
class OptimSection:
    """AdamW; the learning rate itself comes from the schedule."""
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    clip_grad: float = _help("clip the global gradient norm to this (0 disables)", 1.0)


@dataclass
class ScheduleSection:
    style: Literal["cosine", "linear", "constant", "wsd"] = _help(
        "cosine: warmup + cosine to min_lr; linear: warmup + linear to min_lr (phase 2: min_lr 0); "
        "constant: warmup then max_lr; wsd: warmup, stable, decay over the last wsd_decay_fraction", "cosine")
    max_lr: float = 5.3e-4
    min_lr: float = 5.3e-5
    warmup_steps: int = _help("linear warmup from warmup_init_lr to max_lr over these steps", 600)
    warmup_init_lr: float = 0.0
    decay_steps: int | None = _help("steps of decay after warmup (None: the rest of the phase)")
    wsd_decay_fraction: float = 0.1
    wsd_decay_style: Literal["linear", "cosine", "sqrt"] = "linear"


@dataclass
class PhaseConfig:
    """One curriculum phase: its data, its length and its LR schedule; it starts from the previous phase's
    final weights."""
    name: str = "phase"
    blend: list[BlendItem] = field(default_factory=list)
    tokens: int | None = None  # token budget; steps = ceil(tokens / (global_batch_size * seq_len))
    steps: int | None = None  # or an explicit number of optimizer steps
    schedule: ScheduleSection | None = None  # None: the top-level `schedule` section
    optimizer_state: Literal["reset", "carry"] = "reset"  # AdamW moments at the phase start (phase 1 ignores)
    valid_blend: list[BlendItem] = field(default_factory=list)


@dataclass
class TrainSection:
    micro_batch_size: int = 1
    global_batch_size: int = _help("sequences per optimizer step (accumulated over micro-batches and DP ranks)", 8)
    steps: int | None = _help("length of the single phase (when `phases` is empty); or use train.tokens")
    tokens: int | None = _help("token budget of the single phase (when `phases` is empty)")
    seed: int = _help("model init and RNG seed", 1234)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "bf16", "fp32"] = _help("compute dtype; auto: bf16 on GPU, fp32 on CPU "
                                                   "(master weights are always fp32)", "auto")
    eval_interval: int = _help("evaluate held-out loss every N steps (0: never; also at each phase end)", 0)
    eval_iters: int = _help("global batches per evaluation", 2)
    calculate_per_token_loss: bool = _help(
        "Megatron's --calculate-per-token-loss: the step's loss is sum(token losses) / sum(tokens) over all "
        "micro-batches and data-parallel ranks, not the mean of micro-batch means; required when labels are masked",
        False)
    max_consecutive_nan: int = _help("stop after this many NaN/Inf steps in a row (saving the last good state)", 5)
    debug_nan_steps: list[int] = _help("testing hook: make these global steps' loss and gradients NaN",
                                       factory=list)
    threads: int | None = _help("torch CPU threads (None: torch's default)")


@dataclass
class CheckpointSection:
    dir: str | None = _help("checkpoint folder (None: no checkpoints)")
    interval: int = _help("save every N steps (0: only at the end / on SIGTERM)", 0)
    keep_last: int = _help("keep this many newest checkpoints (0 keeps all)", 2)
    resume: bool = _help("resume from <dir>/latest when it exists", True)
    init_from: str | None = _help("start a new run from these weights (a checkpoint step folder or run folder)")
    save_at_end: bool = True
    allow_config_change: bool = _help("resume even when keys that break exact resume changed (data.seq_len, the "
                                      "blend, train.global_batch_size, seeds, the model, ...)", False)


@dataclass
class LogSection:
    dir: str | None = _help("metrics.jsonl, TensorBoard events and config.yaml go here (None: <checkpoint.dir>/log, "
                            "so each run keeps its own; without checkpoint.dir: runs/default)")
    interval: int = _help("console progress line every N steps (and at the last step); 0: none (metrics.jsonl "
                          "still gets every step)", 1)
    tensorboard: bool = True
    quiet: bool = False


@dataclass
class EvalSection:
    """Benchmark evaluation during training (megasnow.eval; docs/evaluation.md)."""
    benchmark_loss_interval: int = _help(
        "every N steps and at each phase end, log the loss on the canonical solutions of eval.benchmark_files "
        "(any parallel layout; needs data.tokenizer; 0: never)", 0)
    benchmark_files: list[str] = _help("benchmarks: 'humaneval' or files in the EvalPlus, HumanEval or MBPP schema",
                                       factory=lambda: ["humaneval"])
    pass_at_1_interval: int = _help(
        "every N steps and at each phase end, log greedy pass@1 on the first eval.pass_at_1_tasks tasks of the first "
        "benchmark (needs parallel.tensor = parallel.pipeline = 1 and data.tokenizer; 0: never)", 0)
    pass_at_1_tasks: int = _help("tasks scored for pass@1 (0: all)", 20)
    pass_at_1_max_tokens: int = _help("new tokens per pass@1 sample", 256)


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    train: TrainSection = field(default_factory=TrainSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    log: LogSection = field(default_factory=LogSection)
    eval: EvalSection = field(default_factory=EvalSection)
    phases: list[PhaseConfig] = _help("curriculum phases, run in order (empty: one phase from data.blend, "
                                      "train.steps/tokens and schedule)", factory=list)


# Set on a UserError that every rank raises alike (the config and the layout are the same on each): under torchrun
# only rank 0 prints it. Errors about files (data, tokenizer, checkpoint) may differ per node and keep their rank,
# unless every rank runs on one node (alike_on_every_rank(files=True)).
ALIKE = "same_on_every_rank"


@contextlib.contextmanager
def alike_on_every_rank(files=False):
    """Mark the UserErrors raised inside as the same on every rank (see ALIKE). `files=True`: errors about files,
    which may be missing on one node only, are marked only when every rank runs on this node (torchrun's
    LOCAL_WORLD_SIZE equals WORLD_SIZE)."""
    from megasnow.errors import UserError

    world = os.environ.get("WORLD_SIZE", "1")
    try:
        yield
    except UserError as e:
        if not files or os.environ.get("LOCAL_WORLD_SIZE", world) == world:
            setattr(e, ALIKE, True)
        raise


def load_train_config(yaml_path=None, overrides=()):
    """Parse and check a training config. The YAML's relative input paths are taken relative to its folder where
    they exist there (resolve_input_paths; so example configs work from any working directory); paths given as
    `key=value` overrides stay relative to the working directory, like every path typed on a command line."""
    try:
        cfg = load_config(TrainConfig, yaml_path)
        if yaml_path is not None:
            resolve_input_paths(cfg, os.path.dirname(os.path.abspath(yaml_path)))
        if overrides:  # applied after the YAML's paths are resolved, so that they are not
            cfg = from_dict(TrainConfig, apply_overrides(to_dict(cfg), overrides))
    except ConfigError as e:
        hint = megatron_blend_hint(str(e)) or section_value_hint(str(e), overrides)
        if hint is None:
            raise
        raise ConfigError(hint) from None
    resolve_log_dir(cfg)
    check_config(cfg)
    return cfg


def resolve_log_dir(cfg):
    """log.dir's default: <checkpoint.dir>/log (checkpoint listings read only step_* folders), so two runs with
    their own checkpoint.dir never share metrics; runs/default without checkpoint.dir. Changes `cfg` in place."""
    if cfg.log.dir is None:
        cfg.log.dir = os.path.join(cfg.checkpoint.dir, "log") if cfg.checkpoint.dir else DEFAULT_LOG_DIR
    return cfg


DEFAULT_LOG_DIR = os.path.join("runs", "default")  # log.dir of a run without checkpoint.dir


def section_value_hint(message, overrides):
    """For a number given where a section is expected (data.fim=0.5): the key it most likely meant."""
    import re

    m = re.match(r"^(?P<key>[\w.]+): expected a mapping, got (float|int)$", message)
    if m is None or m["key"] != "data.fim":
        return None
    value = next((o.partition("=")[2] for o in overrides if o.partition("=")[0] == m["key"]), "RATE")
    return (f"data.fim is a section (rate, spm_rate, level, mask_pad), not a number: for the fill-in-the-middle "
            f"rate use data.fim.rate={value}")


def megatron_blend_hint(message):
    """For a blend given as Megatron's --data-path string ("0.7 A 0.3 B", or "A B" without weights): the message
    showing the list form this config takes; None for any other error."""
    import ast
    import re

    m = re.match(r"^(?P<key>\S*blend): expected a list, got (?P<value>.*)$", message)
    if m is None:
        return None
    try:
        value = ast.literal_eval(m["value"])
    except (ValueError, SyntaxError):
        return None
    if not isinstance(value, str) or not value.split():
        return None
    words = value.split()

    def number(w):
        try:
            return float(w)
        except ValueError:
            return None
    if len(words) % 2 == 0 and all(number(w) is not None for w in words[::2]):
        items = [f"{{path: {p}, weight: {w}}}" for w, p in zip(words[::2], words[1::2])]
    elif all(number(w) is None for w in words):
        items = [f"{{path: {p}}}" for p in words]
    else:
        return None
    override = re.sub(r"\[(\d+)\]", r".\1", m["key"])
    return (f"{m['key']}: {value!r} is Megatron's --data-path form; this config takes a list of datasets: "
            f"{override}=\"[{', '.join(items)}]\" (in YAML, one '- path: P' with 'weight: W' per dataset)")


def help_text():
    lines = ["usage: python -m megasnow.train CONFIG.yaml [key.sub=value ...]",
             "       python -m megasnow.train --check WORLD_SIZE CONFIG.yaml [key.sub=value ...]  (only the config "
             "and parallel-layout checks for WORLD_SIZE processes; the launch scripts run it before torchrun)", "",
             "Config keys (section.key (type) = default):"]
    lines += describe_config(TrainConfig)
    lines += ["", "Each entry of `phases` (and of any blend list) has these keys:"]
    lines += describe_config(PhaseConfig, "phases[i]")
    lines += describe_config(BlendItem, "blend[j]")
    return "\n".join(lines)


def check_eval_section(cfg):
    ev = cfg.eval
    for key in ("benchmark_loss_interval", "pass_at_1_interval", "pass_at_1_tasks"):
        if getattr(ev, key) < 0:
            raise ConfigError(f"eval.{key} must be >= 0, got {getattr(ev, key)}")
    if ev.pass_at_1_max_tokens < 1:
        raise ConfigError(f"eval.pass_at_1_max_tokens must be >= 1, got {ev.pass_at_1_max_tokens}")
    for key in ("benchmark_loss_interval", "pass_at_1_interval"):
        if getattr(ev, key) and not cfg.data.tokenizer:
            raise ConfigError(f"eval.{key} needs data.tokenizer (the benchmarks are tokenized with the run's "
                              f"tokenizer); set it or eval.{key}=0")
        if getattr(ev, key) and not ev.benchmark_files:
            raise ConfigError(f"eval.{key} is set but eval.benchmark_files is empty; name a benchmark ('humaneval' "
                              f"or a file)")
    if ev.pass_at_1_interval and (cfg.parallel.tensor > 1 or cfg.parallel.pipeline > 1):
        raise ConfigError("eval.pass_at_1_interval needs the whole model on one rank (parallel.tensor = "
                          "parallel.pipeline = 1) to generate; use eval.benchmark_loss_interval (any layout) and "
                          "score saved checkpoints with tools/evaluate.py")


def check_parallel_section(cfg):
    """The parallel section's own sizes (the world size and the model are checked by check_layout)."""
    p = cfg.parallel
    for key in ("tensor", "pipeline"):
        value = getattr(p, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"parallel.{key} must be an integer >= 1, got {value!r}")
    v = p.virtual_pipeline
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
        raise ConfigError(f"parallel.virtual_pipeline must be an integer >= 1 or null, got {v!r}")
    if v is not None and v > 1 and p.pipeline < 2:
        raise ConfigError(f"parallel.virtual_pipeline={v} (interleaved schedule) needs parallel.pipeline >= 2; set "
                          f"parallel.virtual_pipeline=null or raise parallel.pipeline")
    counts = p.pipeline_layers
    if counts is not None and any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in counts):
        raise ConfigError(f"parallel.pipeline_layers {counts}: each count must be an integer >= 1 (layers per "
                          f"pipeline stage, in model order)")
    # Their number and sum are checked against the stages and model.num_layers by ParallelConfig.validate.


def sequence_parallel_note(cfg):
    """Megatron-LM's rule: sequence parallelism without tensor parallelism is turned off, with a warning. Changes
    `cfg` in place; returns the warning (None when nothing changed)."""
    if cfg.parallel.sequence_parallel and cfg.parallel.tensor == 1:
        cfg.parallel.sequence_parallel = False
        return ("parallel.sequence_parallel=true has no effect with parallel.tensor=1 (it splits the sequence over "
                "tensor-parallel ranks): turned off")
    return None


def build_parallel_config(cfg, params_dtype="fp32"):
    """megasnow.parallel's ParallelConfig for the run's parallel section (and its micro-batch size)."""
    from megasnow.parallel.parallelize import ParallelConfig

    known = {f.name for f in dataclasses.fields(ParallelConfig)}
    pc = {k: v for k, v in dataclasses.asdict(cfg.parallel).items() if k in known}
    pc.update({k: v for k, v in {"micro_batch_size": cfg.train.micro_batch_size,
                                  "params_dtype": params_dtype}.items() if k in known})
    return ParallelConfig(**pc)


def check_layout(cfg, world_size, vocab_size=None):
    """Every check of the parallel layout against the world size, the batch and the model, before any data or model
    is built (ConfigError / ParallelConfigError / ModelConfigError naming the key). `vocab_size`: the tokenizer's
    (None: the preset's or model.vocab_size). Returns (model config, data-parallel size, micro-batches per step)."""
    from megasnow.parallel import state

    p, t = cfg.parallel, cfg.train
    dp = state.check_parallel_sizes(world_size, p.tensor, p.pipeline)
    per_step = t.micro_batch_size * dp
    if t.global_batch_size % per_step:
        raise ConfigError(f"train.global_batch_size ({t.global_batch_size}) must be a multiple of "
                          f"train.micro_batch_size x data-parallel size = {t.micro_batch_size} x {dp} = {per_step}")
    num_micro_batches = t.global_batch_size // per_step
    check_parallel_layout(cfg, num_micro_batches)
    model_cfg = build_model_config(cfg, vocab_size)
    build_parallel_config(cfg).validate(model_cfg, world_size)
    return model_cfg, dp, num_micro_batches


def check_config(cfg):
    """Refuse settings that cannot work, before anything is built; messages name the key."""
    t = cfg.train
    check_parallel_section(cfg)
    if t.micro_batch_size < 1:
        raise ConfigError(f"train.micro_batch_size must be >= 1, got {t.micro_batch_size}")
    if t.global_batch_size < 1:
        raise ConfigError(f"train.global_batch_size must be >= 1, got {t.global_batch_size}")
    if t.global_batch_size % t.micro_batch_size:
        raise ConfigError(f"train.global_batch_size ({t.global_batch_size}) must be a multiple of "
                          f"train.micro_batch_size ({t.micro_batch_size})")
    if cfg.data.num_workers is not None and (isinstance(cfg.data.num_workers, bool)
                                             or not isinstance(cfg.data.num_workers, int)
                                             or cfg.data.num_workers < 0):
        raise ConfigError(f"data.num_workers must be an integer >= 0 (0: read in the training process), got "
                          f"{cfg.data.num_workers!r}")
    if cfg.data.seq_len < 1:
        raise ConfigError(f"data.seq_len must be >= 1, got {cfg.data.seq_len}")
    if not 0.0 <= cfg.data.valid_fraction < 1.0:
        raise ConfigError(f"data.valid_fraction must be in [0, 1), got {cfg.data.valid_fraction}")
    fim = cfg.data.fim
    for key in ("rate", "spm_rate"):
        value = getattr(fim, key)
        if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
            raise ConfigError(f"data.fim.{key} must be a probability in [0, 1], got {value!r}")
    if fim.level not in ("file", "sample"):
        raise ConfigError(f"data.fim.level must be 'file' or 'sample', got {fim.level!r}")
    if fim.rate > 0 and not cfg.data.tokenizer:
        raise ConfigError("data.fim.rate > 0 needs data.tokenizer: fill-in-the-middle re-tokenizes the text it "
                          "rearranges (set data.tokenizer, or data.fim.rate=0)")
    if fim.rate > 0 and fim.mask_pad and not t.calculate_per_token_loss:
        raise ConfigError("data.fim.mask_pad leaves <fim_pad> labels out of the loss, which needs the per-token "
                          "loss: set train.calculate_per_token_loss=true, or data.fim.mask_pad=false")
    for key, value in (("train.eval_interval", t.eval_interval), ("log.interval", cfg.log.interval),
                       ("checkpoint.interval", cfg.checkpoint.interval), ("checkpoint.keep_last",
                                                                          cfg.checkpoint.keep_last)):
        if value < 0:
            raise ConfigError(f"{key} must be >= 0 (0: off), got {value}")
    if t.eval_iters < 1:
        raise ConfigError(f"train.eval_iters must be >= 1 (global batches per evaluation), got {t.eval_iters}")
    if t.max_consecutive_nan < 1:
        raise ConfigError("train.max_consecutive_nan must be >= 1")
    check_eval_section(cfg)
    for i, phase in enumerate(resolve_phases(cfg)):
        where = f"phases[{i}]" if cfg.phases else "data.blend"
        if not phase.blend:
            raise ConfigError(f"{where}: the phase has no datasets (set its blend: [{{path: PREFIX}}])")
        for j, b in enumerate(phase.blend):
            if not b.path:
                raise ConfigError(f"{where}.blend[{j}].path is empty")
            if b.weight <= 0 or not math.isfinite(b.weight):
                raise ConfigError(f"{where}.blend[{j}].weight must be a positive number, got {b.weight}")
            if b.repeat is not None and b.repeat < 1:
                raise ConfigError(f"{where}.blend[{j}].repeat must be >= 1, got {b.repeat}")
        if phase.steps is not None and phase.tokens is not None:
            # as Megatron refuses --train-iters with --train-samples: one length, stated once
            pre = f"phases[{i}]" if cfg.phases else "train"
            raise ConfigError(f"{pre}.steps ({phase.steps}) and {pre}.tokens ({phase.tokens}, i.e. "
                              f"{phase_steps(dataclasses.replace(phase, steps=None), cfg)} steps) are both set; "
                              f"give only one of them (to override one from the command line, unset the other: "
                              f"{pre.replace('[', '.').replace(']', '')}.tokens=null)")
        if phase.steps is None and phase.tokens is None and not all(b.repeat for b in phase.blend):
            raise ConfigError(f"{'phases[%d]' % i if cfg.phases else 'train'}: give steps or tokens (or a repeat "
                              f"count for every dataset of the blend)")
        s = phase.schedule
        if s.warmup_steps < 0 or s.max_lr < 0 or s.min_lr < 0 or s.min_lr > s.max_lr:
            raise ConfigError(f"{where}: schedule needs warmup_steps >= 0 and 0 <= min_lr <= max_lr "
                              f"(got warmup {s.warmup_steps}, max {s.max_lr}, min {s.min_lr})")


def check_parallel_layout(cfg, num_micro_batches):
    """Refuse batch/sequence settings that the parallel layout cannot run, before data or model are built
    (otherwise they fail at the first step or the first forward, far from the key to change)."""
    p, t = cfg.parallel, cfg.train
    if p.virtual_pipeline is not None and p.virtual_pipeline > 1 and num_micro_batches % p.pipeline:
        raise ConfigError(f"the interleaved pipeline schedule (parallel.virtual_pipeline={p.virtual_pipeline}) needs "
                          f"micro-batches per step per data-parallel rank ({num_micro_batches} = "
                          f"train.global_batch_size {t.global_batch_size} / (train.micro_batch_size "
                          f"{t.micro_batch_size} x data-parallel size)) to be a multiple of parallel.pipeline "
                          f"({p.pipeline}); change train.global_batch_size or train.micro_batch_size, or set "
                          f"parallel.virtual_pipeline=null")
    if p.sequence_parallel and cfg.data.seq_len % p.tensor:
        raise ConfigError(f"parallel.sequence_parallel splits each sequence over the {p.tensor} tensor-parallel "
                          f"ranks: data.seq_len ({cfg.data.seq_len}) must be a multiple of parallel.tensor "
                          f"({p.tensor}); change data.seq_len or set parallel.sequence_parallel=false")


def resolve_phases(cfg):
    """The run's phases with every default filled in: the single implicit phase when `phases` is empty,
    and the top-level schedule where a phase gives none."""
    if cfg.phases:
        phases = cfg.phases
    else:
        phases = [PhaseConfig(name="main", blend=cfg.data.blend, tokens=cfg.train.tokens, steps=cfg.train.steps,
                              valid_blend=cfg.data.valid_blend)]
    out = []
    for p in phases:
        p = dataclasses.replace(p, schedule=p.schedule or cfg.schedule,
                                valid_blend=p.valid_blend or cfg.data.valid_blend)
        out.append(p)
    return out


def phase_steps(phase, cfg):
    """Optimizer steps of a phase: explicit steps, or the token budget over tokens per step (rounded up);
    None when neither is given (every dataset then has a repeat count, which fixes the length)."""
    if phase.steps is not None:
        return phase.steps
    if phase.tokens is None:
        return None
    per_step = cfg.train.global_batch_size * cfg.data.seq_len
    return max(1, math.ceil(phase.tokens / per_step))


def resolve_input_paths(cfg, base_dir):
    """Take the config's relative input paths relative to `base_dir` (the YAML's folder) when they exist there
    (megasnow.config.path_from_yaml_folder, the rule of every stage): the blends' dataset prefixes (PREFIX.idx),
    data.tokenizer, checkpoint.init_from and eval.benchmark_files (except the name 'humaneval'). Outputs
    (checkpoint.dir, log.dir, data.cache_dir) stay relative to the working directory. Returns `cfg`, changed in
    place."""
    def fix(items):
        for b in items:
            b.path = path_from_yaml_folder(b.path, base_dir, suffix=".idx")
    fix(cfg.data.blend)
    fix(cfg.data.valid_blend)
    for p in cfg.phases:
        fix(p.blend)
        fix(p.valid_blend)
    cfg.data.tokenizer = path_from_yaml_folder(cfg.data.tokenizer, base_dir)
    cfg.checkpoint.init_from = path_from_yaml_folder(cfg.checkpoint.init_from, base_dir)
    cfg.eval.benchmark_files = [f if f == "humaneval" else path_from_yaml_folder(f, base_dir)
                                for f in cfg.eval.benchmark_files]
    return cfg


def build_model_config(cfg, vocab_size=None):
    """megasnow.model's ModelConfig from the preset plus the overrides of the `model` section."""
    from megasnow.model.config import ModelConfig, get_preset

    try:
        base = get_preset(cfg.model.preset)
    except (KeyError, ValueError) as e:
        raise ConfigError(f"model.preset: {e}") from None
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    changes = {}
    for f in dataclasses.fields(ModelSection):
        value = getattr(cfg.model, f.name)
        if f.name == "preset" or value is None:
            continue
        if f.name not in known:
            raise ConfigError(f"model.{f.name}: this model version has no such field")
        changes[f.name] = value
    if "vocab_size" not in changes and vocab_size is not None:
        changes["vocab_size"] = vocab_size
    if "max_seq_len" not in changes and base.max_seq_len < cfg.data.seq_len:
        changes["max_seq_len"] = cfg.data.seq_len
    if "sequence_parallel" in known:
        changes["sequence_parallel"] = cfg.parallel.sequence_parallel
    model_cfg = dataclasses.replace(base, **changes)
    if cfg.data.seq_len > model_cfg.max_seq_len:
        raise ConfigError(f"data.seq_len ({cfg.data.seq_len}) exceeds model.max_seq_len ({model_cfg.max_seq_len})")
    return model_cfg
