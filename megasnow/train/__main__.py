"""`python -m megasnow.train CONFIG.yaml [key.sub=value ...]` (also under torchrun): train through the config's phases.

Exit codes: 0 finished (or stopped by SIGTERM after saving), 2 a config, data, checkpoint or layout error (one
`error: ...` line naming the key), 3 stopped after too many non-finite steps, 130 Ctrl-C (after saving).
"""
import os
import signal
import sys

from megasnow.config import ConfigError
from megasnow.utils.cli import EXIT_INTERRUPTED, run_tool

EXIT_CONFIG, EXIT_STOPPED = 2, 3

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
}
SWITCHES = {"--sequence-parallel", "--use-distributed-optimizer", "--calculate-per-token-loss"}


def unknown_flag_message(flag, argv):
    """The error for a `--flag`: with the key=value override it maps to when it is one of Megatron's flags."""
    name, _, value = flag.partition("=")
    usage = "megasnow.train takes CONFIG.yaml and key.sub=value overrides (see python -m megasnow.train --help)"
    key = MEGATRON_FLAGS.get(name)
    if key is None:
        return f"unknown flag {name}: {usage}"
    if name in SWITCHES:
        value = "true"
    elif not value:
        i = argv.index(flag)
        value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else "VALUE"
    if name == "--data-path":
        return (f"unknown flag {name}: Megatron's flag; here the blend is a list, e.g. "
                f"'data.blend=[{{path: PREFIX, weight: 1.0}}]' (or phases.N.blend); {usage}")
    if name == "--load":
        return (f"unknown flag {name}: Megatron's flag; here use {key}={value} (resumes from its `latest`), or "
                f"checkpoint.init_from={value} to start a new run from its weights")
    return f"unknown flag {name}: Megatron's flag; here use the override {key}={value}"


def main(argv=None):
    argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--debug"]  # run_tool reads --debug
    from megasnow.train.config import help_text, load_train_config

    if not argv or argv[0] in ("-h", "--help"):
        print(help_text())
        return 0 if argv else EXIT_CONFIG
    flags = [a for a in argv if a.startswith("--")]
    if flags:
        raise ConfigError(unknown_flag_message(flags[0], argv))
    yaml_path, overrides = (None, argv) if "=" in argv[0] else (argv[0], argv[1:])
    if yaml_path is not None and not os.path.isfile(yaml_path):
        raise ConfigError(f"{yaml_path}: no such config file (usage: python -m megasnow.train CONFIG.yaml "
                          f"[key.sub=value ...])")
    cfg = load_train_config(yaml_path, overrides)  # the YAML's relative input paths resolved against its folder

    from megasnow.parallel import state

    state.init_distributed()
    try:
        return train(cfg)
    finally:
        state.shutdown()


def train(cfg):
    """Set up and run; the exit code."""
    from megasnow.parallel import state
    from megasnow.train.trainer import Trainer, TrainingStopped

    pc = cfg.parallel
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
    return EXIT_INTERRUPTED if trainer.stop_signal == signal.SIGINT else 0


if __name__ == "__main__":
    sys.exit(run_tool(main, prog="megasnow.train"))
