"""`python -m megasnow.train CONFIG.yaml [key.sub=value ...]` (also under torchrun): train through the config's phases."""
import os
import sys

from megasnow.config import ConfigError

EXIT_CONFIG, EXIT_STOPPED = 2, 3


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    from megasnow.train.config import help_text, load_train_config, resolve_data_paths

    if not argv or argv[0] in ("-h", "--help"):
        print(help_text())
        return 0 if argv else EXIT_CONFIG
    yaml_path, overrides = (None, argv) if "=" in argv[0] else (argv[0], argv[1:])
    try:
        cfg = load_train_config(yaml_path, overrides)
        if yaml_path:
            resolve_data_paths(cfg, os.path.dirname(os.path.abspath(yaml_path)))
    except (ConfigError, OSError) as e:
        print(f"megasnow.train: config error: {e}", file=sys.stderr)
        return EXIT_CONFIG

    from megasnow.parallel import state
    from megasnow.train.checkpoint import CheckpointError
    from megasnow.train.trainer import Trainer, TrainingStopped

    state.init_distributed()
    pc = cfg.parallel
    try:
        state.initialize_model_parallel(pc.tensor, pc.pipeline, pc.virtual_pipeline)
        trainer = Trainer(cfg).setup()
    except (ConfigError, CheckpointError, state.ParallelConfigError) as e:
        print(f"megasnow.train: {e}", file=sys.stderr)
        state.shutdown()
        return EXIT_CONFIG
    try:
        trainer.run()
    except TrainingStopped as e:
        print(f"megasnow.train: {e}", file=sys.stderr)
        return EXIT_STOPPED
    finally:
        state.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
