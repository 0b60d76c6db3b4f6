"""The one command-line rule for every megasnow tool (tools/*.py, python -m megasnow.*).

- a user error (megasnow.errors.UserError, or a type the tool names) prints `error: ...` and exits 2;
- Ctrl-C prints one line and exits 130; SIGTERM (a scheduler's time limit, `kill`) takes the same way out (the
  same clean-up runs) with its own line and exit 143;
- `--debug` (or MEGASNOW_DEBUG=1) prints the traceback as well;
- argparse mistakes also print one `error: ...` line (with a pointer to --help) and exit 2;
- a failed start leaves nothing behind (`removed_on_failure` around the start of a tool that creates a folder).
"""
import argparse
import atexit
import contextlib
import difflib
import functools
import os
import shutil
import signal
import sys
import traceback

from megasnow.errors import UserError

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 2, 130, 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as a KeyboardInterrupt, so that the clean-up written for Ctrl-C (removing
    a half-built output, saving what resumes) runs for it too."""

    signum = signal.SIGTERM


def raise_on_sigterm():
    """From now on SIGTERM raises Terminated (a KeyboardInterrupt) in this process's main thread; a forked
    child (a pool's worker, which its pool stops with SIGTERM) gets the default action back at fork, so it dies at
    once even while blocked in a lock. Call it in the main thread; returns the previous handler."""
    global _fork_hook_registered
    if not _fork_hook_registered:
        os.register_at_fork(after_in_child=_default_sigterm_in_child)
        _fork_hook_registered = True
    return signal.signal(signal.SIGTERM, functools.partial(_raise_on_sigterm, owner=os.getpid()))


_fork_hook_registered = False


def _default_sigterm_in_child():
    # A Python-level handler runs only when the child's main thread next executes bytecode: a pool worker blocked in
    # sem_wait when the signal lands would never run it, and its pool's terminate() would wait forever in join().
    handler = signal.getsignal(signal.SIGTERM)
    if isinstance(handler, functools.partial) and handler.func is _raise_on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _raise_on_sigterm(signum, frame, owner):
    if os.getpid() != owner:  # a child forked before the at-fork hook could reset the handler
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated()


def debug_enabled(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get("MEGASNOW_DEBUG", "") not in ("", "0")


def warn(message):
    """Print `warning: message` on stderr (one line, never fatal). A tqdm bar being drawn is cleared first and
    redrawn after (tqdm's external_write_mode), so the warning gets a line of its own instead of the bar's tail."""
    tqdm = sys.modules.get("tqdm")  # only when a tool already uses it: warn() itself stays light
    if tqdm is None:
        print(f"warning: {message}", file=sys.stderr, flush=True)
        return
    with tqdm.tqdm.external_write_mode(file=sys.stderr):
        print(f"warning: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def removed_on_failure(path):
    """Wrap a tool's start (checks and set-up before any resumable work): if it fails, `path` (file or folder) is
    removed again when it did not exist before, so a failed start leaves nothing behind and the corrected command
    starts clean. Do not wrap resumable work: a Ctrl-C there must keep finished outputs.
    """
    path = os.fspath(path)
    existed = os.path.lexists(path)
    try:
        yield path
    except BaseException:
        if not existed and os.path.lexists(path):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
        raise


def fail(message):
    """Raise the UserError that run_tool turns into `error: message` and exit 2."""
    raise UserError(message)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with `--debug`, defaults shown in --help (also for options without help text), and one-line
    errors (`error: ...`, exit 2) that suggest the closest option for a mistyped one. Option prefixes are not
    accepted (allow_abbrev=False)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)  # `--epoch` must not silently mean `--epochs` (as Megatron's)
        super().__init__(*args, **kwargs)
        if kwargs.get("add_help", True):
            self.add_argument("--debug", action="store_true", help="show the full traceback of any error")

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        if action.help is None and _shows_default(action):
            action.help = "(default: %(default)s)"  # argparse shows no default for an option without help
        return action

    def parse_known_args(self, args=None, namespace=None):
        self._argv = list(sys.argv[1:] if args is None else args)  # for error(): the words this parser was given
        return super().parse_known_args(args, namespace)

    def error(self, message):
        if message.startswith("the following arguments are required"):
            # argparse checks required arguments before it reports unknown ones, so `--outptu X` would read as
            # "--output is required": a mistyped option is the likelier cause, so name it (with its suggestion)
            unknown = self._unknown_options()
            if unknown:
                message = "unrecognized arguments: " + " ".join(unknown)
        # argparse reports a subcommand's unknown words from the top parser: point to the (sub)command run
        ran = self._subcommand_run()
        print(f"error: {message}{ran._suggestion(message)} (see {ran.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)

    def _subcommand_run(self):
        """The parser of the innermost subcommand named in this parser's arguments (itself when there is none)."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for word in getattr(self, "_argv", []):
                    sub = action.choices.get(word)
                    if isinstance(sub, ArgumentParser):
                        sub._argv = self._argv[self._argv.index(word) + 1:]
                        return sub._subcommand_run()
        return self

    def _unknown_options(self):
        """The `--words` of this parser's arguments (before a bare `--`) that no option of it or of its
        subcommands' parsers accepts (abbreviations count as accepted where argparse allows them)."""
        known = _option_strings(self)
        unknown = []
        for word in getattr(self, "_argv", []):
            if word == "--":
                break
            name = word.split("=", 1)[0]
            if not name.startswith("--") or name in known:
                continue
            if self.allow_abbrev and any(k.startswith(name) for k in known):
                continue
            unknown.append(name)
        return unknown

    def _suggestion(self, message):
        """'; did you mean --max-new-tokens?' for an unrecognized option close to a real one."""
        if not message.startswith("unrecognized arguments:"):
            return ""
        known = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
        for word in message.split(":", 1)[1].split():
            match = difflib.get_close_matches(word.split("=")[0], known, n=1, cutoff=0.75)
            if word.startswith("--") and match:
                return f"; did you mean {match[0]}?"
        return ""


def _option_strings(parser):
    """Every option string of `parser` and, recursively, of its subcommands' parsers."""
    known = set()
    for action in parser._actions:
        known.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                known |= _option_strings(sub)
    return known


def _shows_default(action):
    """Whether --help shows this option's default: not for None, flags (store_true) or empty lists."""
    default = action.default
    return not (default is None or default is False or default is True or default is argparse.SUPPRESS
                or default == [] or isinstance(action, argparse._HelpAction))


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (see _shows_default) and keeps the description's layout."""

    def _get_help_string(self, action):
        if not _shows_default(action) or action.help is None:
            return action.help
        return super()._get_help_string(action)  # adds " (default: ...)" unless the help already shows it


INTERRUPTED_RESUMABLE = "finished outputs are kept, rerun the same command to resume"


def run_tool(main, argv=None, user_errors=(), prog=None, on_interrupt=INTERRUPTED_RESUMABLE):
    """Call `main(argv)` under the rule above and return the exit status (pass it to sys.exit).

    `user_errors` adds exception types that count as user mistakes besides UserError (e.g. library errors that
    do not derive from it yet). A `main` that returns None counts as success. Run from the command line
    (argv=None), Ctrl-C ends the process at once after the one line (see _exit_now) instead of returning.
    `on_interrupt` ends that line, `PROG: interrupted (Ctrl-C); ON_INTERRUPT`: the default suits a tool that
    resumes; a server says e.g. "server stopped".
    """
    prog = prog or os.path.basename(sys.argv[0] or "megasnow")
    if argv is None and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:  # a tool may install its own (trainer)
        raise_on_sigterm()
    rc = _run(main, argv, user_errors, prog, debug_enabled(argv), on_interrupt)
    if rc in (EXIT_INTERRUPTED, EXIT_TERMINATED) and argv is None:
        _exit_now(rc)
    return rc


def _interrupt_behind(e):
    """The KeyboardInterrupt (Ctrl-C or Terminated) that `e` was raised while handling, if any: a library that
    cleans up on the way out (torch.save's zip writer) can raise its own error over the interrupt."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _run(main, argv, user_errors, prog, debug, on_interrupt=INTERRUPTED_RESUMABLE):
    try:
        try:
            rc = main(argv)
        except Exception as e:
            interrupt = _interrupt_behind(e)
            if interrupt is None:
                raise
            raise interrupt from e
        return EXIT_OK if rc is None else rc
    except KeyboardInterrupt as e:
        if debug:
            traceback.print_exc()
        if isinstance(e, Terminated):
            print(f"{prog}: terminated (SIGTERM); {on_interrupt}", file=sys.stderr, flush=True)
            return EXIT_TERMINATED
        print(f"{prog}: interrupted (Ctrl-C); {on_interrupt}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except (UserError, *user_errors) as e:
        if debug:
            traceback.print_exc()
        print(f"error: {_one_line(e)}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except BrokenPipeError:  # `tool ... | head`: not an error
        sys.stderr.close()
        return EXIT_OK


def _exit_now(rc):
    """Leave at once after Ctrl-C in a tool run from the command line (run_tool with argv=None).

    With torch, transformers and scipy loaded, the interpreter's final garbage collection and module teardown
    take 5-20 s on a busy 2-core machine, after the "interrupted" line. Outputs are atomic and the interrupted
    work is discarded anyway, so only the atexit handlers (worker pools, Ray, logging) still run.
    """
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(rc)


def _one_line(e):
    text = str(e) or type(e).__name__
    return " ".join(text.split("\n")).strip()
