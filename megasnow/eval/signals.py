"""Holding Ctrl-C/SIGTERM back for a short step that must finish whole (renaming a report's files together, removing
a sandbox's folder), then delivering them."""
import contextlib
import signal
import threading


@contextlib.contextmanager
def signals_held(signums=(signal.SIGINT, signal.SIGTERM)):
    """Hold back SIGINT/SIGTERM while the block runs (it must be short and cannot hang) and deliver them, to the
    handlers they had, once it ends. Outside the main thread (where Python runs no handler) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught, old = [], {}
    try:
        for signum in signums:
            if signal.getsignal(signum) is not None:  # (None: a handler set outside Python, which we cannot restore)
                old[signum] = signal.signal(signum, lambda n, frame: caught.append(n))
        yield
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)
