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


def main(argv=None):
    argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--debug"]  # run_tool reads --debug
    from megasnow.train.config import help_text, load_train_config

    if not argv or argv[0] in ("-h", "--help"):
        print(help_text())
        return 0 if argv else EXIT_CONFIG
    flags = [a for a in argv if a.startswith("--")]
    if flags:
        raise ConfigError(f"unknown flag {flags[0]}: megasnow.train takes CONFIG.yaml and key.sub=value overrides "
                          f"(see python -m megasnow.train --help)")
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
