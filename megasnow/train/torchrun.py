"""`python -m megasnow.train.torchrun [torchrun's arguments]`: torchrun (torch.distributed.run) as the launch scripts
run it: the same launcher, without its Python traceback when a stop signal ends it or a rank fails."""
import sys


def main(argv=None):
    """Run torchrun with `argv` (default: sys.argv[1:]); returns its exit code: 128 + the signal's number when a stop
    signal (SIGTERM, SIGINT, SIGHUP) ended it (torchrun has passed it on to the ranks and waited for them), 1 when
    a rank failed (torchrun's report of the failed ranks is printed, as torchrun does, without the traceback)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(argv)
    except SignalException as e:
        return 128 + int(e.sigval)
    except ChildFailedError as e:
        print(f"torchrun: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
