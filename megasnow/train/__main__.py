"""`python -m megasnow.train CONFIG.yaml [key.sub=value ...]` (also under torchrun): train through the config's phases.

Exit codes: 0 finished (or stopped by SIGTERM after saving), 1 lost contact with another rank (or a bug),
2 a config, data, checkpoint or layout error (one `error: ...` line naming the key), 3 stopped after too many
non-finite steps, 130 Ctrl-C (after saving).
`python -m megasnow.train --check WORLD_SIZE CONFIG.yaml [...]`: only the config and parallel-layout checks for that
many processes and the cheap input checks (resume config, checkpoint.init_from, log.dir, blend files), in this one
process (the launch scripts run it before torchrun).
Under torchrun, rank 0 prints the errors that are the same on every rank (config, layout); other ranks print only
their own, prefixed `[rank N]`. With MEGASNOW_EXIT_STATUS_FILE set (examples/launch/*.sh), each node's local rank 0
writes its exit code there, for the script to exit with after torchrun's own report.
"""
import atexit
import os
import signal
import sys

from megasnow.config import ConfigError
from megasnow.errors import UserError
from megasnow.train.config import ALIKE, alike_on_every_rank
from megasnow.utils.cli import (EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, _interrupt_behind, _one_line,
                                debug_enabled, run_tool)

EXIT_LOST_CONTACT, EXIT_CONFIG, EXIT_STOPPED = 1, 2, 3
STATUS_FILE_ENV = "MEGASNOW_EXIT_STATUS_FILE"

# Megatron-LM's flags (megatron/training/arguments.py) and the override that says the same here.
MEGATRON_FLAGS = {
    "--micro-batch-size": "train.micro_batch_size", "--global-batch-size": "train.global_batch_size",
    "--lr": "schedule.max_lr", "--min-lr": "schedule.min_lr", "--lr-warmup-iters": "schedule.warmup_steps",
    "--lr-decay-style": "schedule.style", "--lr-decay-iters": "schedule.decay_steps",
    "--train-iters": "train.steps", "--seq-length": "data.seq_len", "--max-position-embeddings": "model.max_seq_len",
    "--tensor-model-parallel-size": "parallel.tensor", "--pipeline-model-parallel-size": "parallel.pipeline",
    "--sequence-parallel": "parallel.sequence_parallel",
    "--use-distributed-optimizer": "parallel.use_distributed_optimizer", "--save": "checkpoint.dir",
    "--load": "checkpoint.dir", "--save-interval": "checkpoint.interval", "--seed": "train.seed",
    "--weight-decay": "optim.weight_decay", "--clip-grad": "optim.clip_grad", "--adam-beta1": "optim.beta1",
    "--adam-beta2": "optim.beta2", "--adam-eps": "optim.eps", "--eval-interval": "train.eval_interval",
    "--eval-iters": "train.eval_iters", "--log-interval": "log.interval", "--tensorboard-dir": "log.dir",
    "--tokenizer-model": "data.tokenizer", "--num-workers": "data.num_workers",
    "--calculate-per-token-loss": "train.calculate_per_token_loss", "--data-path": "data.blend",
    "--virtual-pipeline-model-parallel-size": "parallel.virtual_pipeline",
    "--num-layers-per-virtual-pipeline-stage": "parallel.virtual_pipeline",
    "--bf16": "train.dtype", "--fp16": "train.dtype", "--recompute-activations": "model.activation_checkpointing",
    "--recompute-granularity": "model.activation_checkpointing",
    "--overlap-grad-reduce": "parallel.overlap_grad_reduce",
    "--fim-rate": "data.fim.rate", "--fim-spm-rate": "data.fim.spm_rate",  # bigcode-project/Megatron-LM
}
SWITCHES = {"--sequence-parallel", "--use-distributed-optimizer", "--calculate-per-token-loss",
            "--overlap-grad-reduce"}
# Flags whose value is not the key's value as is: the message says what to give instead.
SPECIAL = {
    "--num-layers-per-virtual-pipeline-stage": (
        "here give the number of model chunks per stage: parallel.virtual_pipeline = model.num_layers / "
        "(parallel.pipeline x {value}); e.g. 24 layers, pipeline 4 and 2 layers per virtual stage give "
        "parallel.virtual_pipeline=3"),
    "--bf16": "here use the override train.dtype=bf16 (the default on GPU; master weights stay fp32)",
    "--fp16": "fp16 with loss scaling is not supported; use train.dtype=bf16 (the default on GPU)",
    "--recompute-activations": "here use the override model.activation_checkpointing=selective",
    "--recompute-granularity": "here use the override model.activation_checkpointing={value} (full or selective)",
}


def unknown_flag_message(flag, argv):
    """The error for a `--flag`: with the key=value override it maps to when it is one of Megatron's flags."""
    name, _, value = flag.partition("=")
    usage = "megasnow.train takes CONFIG.yaml and key.sub=value overrides (see python -m megasnow.train --help)"
    key = MEGATRON_FLAGS.get("--" + name[2:].replace("_", "-"))  # Megatron's parser also takes --train_iters
    if key is None:
        return f"unknown flag {name}: {usage}"
    name = "--" + name[2:].replace("_", "-")
    if name in SWITCHES or name in ("--bf16", "--fp16", "--recompute-activations"):
        value = "true"
    elif not value:
        i = argv.index(flag)
        value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else "VALUE"
    if name in SPECIAL:
        return f"unknown flag {flag.partition('=')[0]}: Megatron's flag; " + SPECIAL[name].format(value=value)
    if name == "--data-path":
        return (f"unknown flag {name}: Megatron's flag; here the blend is a list, e.g. "
                f"'data.blend=[{{path: PREFIX, weight: 1.0}}]' (or phases.N.blend); {usage}")
    if name == "--load":
        return (f"unknown flag {name}: Megatron's flag; here use {key}={value} (resumes from its `latest`), or "
                f"checkpoint.init_from={value} to start a new run from its weights")
    return f"unknown flag {flag.partition('=')[0]}: Megatron's flag; here use the override {key}={value}"


def main(argv=None):
    argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--debug"]  # run_tool reads --debug
    from megasnow.train.config import help_text

    if not argv or argv[0] in ("-h", "--help"):
        print(help_text())
        return 0 if argv else EXIT_CONFIG
    if argv[0] == "--check":
        return check_only(argv[1:])
    flags = [a for a in argv if a.startswith("--")]
    if flags:
        raise ConfigError(unknown_flag_message(flags[0], argv))
    with alike_on_every_rank():
        cfg = _load(argv)

    from megasnow.parallel import state

    state.init_distributed()
    try:
        return train(cfg)
    finally:
        state.shutdown()


def _load(argv):
    from megasnow.train.config import load_train_config

    yaml_path, overrides = (None, argv) if "=" in argv[0] else (argv[0], argv[1:])
    if yaml_path is not None and not os.path.isfile(yaml_path):
        raise ConfigError(f"{yaml_path}: no such config file (usage: python -m megasnow.train CONFIG.yaml "
                          f"[key.sub=value ...])")
    return load_train_config(yaml_path, overrides)  # the YAML's relative input paths resolved against its folder


def check_only(argv):
    """`--check WORLD_SIZE CONFIG.yaml [overrides]`: the config and every layout check for WORLD_SIZE processes
    (sizes, batch, heads, layers per stage, vocabulary padding) and check_inputs, without building data or model
    and without a process group."""
    from megasnow.train.config import check_layout, sequence_parallel_note
    from megasnow.train.data import load_run_tokenizer
    from megasnow.utils.cli import warn

    if not argv or not argv[0].isdigit() or int(argv[0]) < 1 or len(argv) < 2:
        raise ConfigError("--check takes the number of processes, then the config: python -m megasnow.train "
                          "--check WORLD_SIZE CONFIG.yaml [key.sub=value ...]")
    world = int(argv[0])
    flags = [a for a in argv[1:] if a.startswith("--")]
    if flags:
        raise ConfigError(unknown_flag_message(flags[0], argv))
    cfg = _load(argv[1:])
    note = sequence_parallel_note(cfg)
    if note:
        warn(note)
    tokenizer, _ = load_run_tokenizer(cfg.data.tokenizer)
    model_cfg, dp, micro = check_layout(cfg, world, tokenizer.vocab_size if tokenizer else None)
    check_inputs(cfg, model_cfg)
    p = cfg.parallel
    print(f"megasnow.train: config, inputs and layout OK for {world} process(es): tensor {p.tensor} x pipeline "
          f"{p.pipeline} x data {dp}, {micro} micro-batch(es) of {cfg.train.micro_batch_size} per step per "
          f"data-parallel rank, {model_cfg.num_layers} layers", flush=True)
    return 0


def check_inputs(cfg, model_cfg):
    """The trainer's cheap start-up checks of the run's inputs, for --check (raise ConfigError naming the key): a
    resume's config against checkpoint.dir/latest's (changes that break exact resume, another parallel layout),
    else checkpoint.init_from's step folder and model shapes; log.dir's metrics of another run; every blend's
    PREFIX.bin/.idx (its index header is read; no dataset is built)."""
    from megasnow.train import checkpoint as ckpt
    from megasnow.train import resume, run_dir
    from megasnow.train.config import resolve_log_dir, resolve_phases
    from megasnow.train.data import check_blend_paths, check_init_from, check_init_from_model

    c = cfg.checkpoint
    latest = ckpt.resolve_latest(c.dir) if c.dir and c.resume else None
    if latest is not None:
        saved = resume.saved_config(latest)
        if saved is not None:
            phase = ckpt.read_meta(latest)["trainer"]["phase"]
            resume.check_resume_config(saved, cfg, latest, phase, c.allow_config_change)
    elif c.init_from:
        check_init_from_model(check_init_from(c.init_from), model_cfg)
    run_dir.check_log_dir(resolve_log_dir(cfg), latest is not None)
    for i, p in enumerate(resolve_phases(cfg)):
        for key in ("blend", "valid_blend"):
            check_blend_paths(getattr(p, key), f"{f'phases[{i}]' if cfg.phases else 'data'}.{key}")


def train(cfg):
    """Set up and run; the exit code."""
    from megasnow.parallel import state
    from megasnow.train.trainer import LostContact, Trainer, TrainingStopped

    pc = cfg.parallel
    with alike_on_every_rank():
        state.initialize_model_parallel(pc.tensor, pc.pipeline, pc.virtual_pipeline)
    trainer = Trainer(cfg).setup()
    if trainer.finished_at is not None:
        trainer.close()
        if trainer.is_logger:
            print(f"nothing left to do: run finished at step {trainer.finished_at} ({trainer.resume_from}); "
                  f"to train further raise the last phase's steps/tokens or add a phase", flush=True)
        return 0
    try:
        trainer.run()
    except TrainingStopped as e:
        print(f"megasnow.train: {e}", file=sys.stderr)
        return EXIT_STOPPED
    except LostContact as e:
        print(str(e), file=sys.stderr, flush=True)
        return EXIT_LOST_CONTACT
    return EXIT_INTERRUPTED if trainer.stop_signal == signal.SIGINT else 0


def launched(argv=None):
    """`main` as one rank of a launch: one `error:` line per launch, and the exit status recorded for the script."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    status = {"rc": None}
    if os.environ.get(STATUS_FILE_ENV) and os.environ.get("LOCAL_RANK", "0") == "0":
        atexit.register(_write_status, os.environ[STATUS_FILE_ENV], status)
    try:
        rc = main(argv)
        status["rc"] = 0 if rc is None else rc
        return rc
    except UserError as e:
        status["rc"] = EXIT_CONFIG
        if world == 1 or rank == 0 or debug_enabled(argv):
            raise
        if not getattr(e, ALIKE, False):  # this rank's own trouble (a file missing on its node, ...)
            print(f"error: [rank {rank}] {_one_line(e)}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    except KeyboardInterrupt as e:
        status["rc"] = EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED
        raise
    except Exception as e:
        status["rc"] = EXIT_INTERRUPTED if _interrupt_behind(e) is not None else 1
        raise


def _write_status(path, status):
    if status["rc"] is None:
        return
    try:
        with open(path, "w") as f:
            f.write(f"{status['rc']}\n")
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(run_tool(launched, prog="megasnow.train"))
