"""The one command-line rule for every megasnow tool (tools/*.py, python -m megasnow.*).

- a user error (megasnow.errors.UserError, or a type the tool names) prints `error: ...` and exits 2;
- Ctrl-C prints one line and exits 130;
- `--debug` (or MEGASNOW_DEBUG=1) prints the traceback as well;
- argparse mistakes also print one `error: ...` line (with a pointer to --help) and exit 2.
"""
import argparse
import os
import sys
import traceback

from megasnow.errors import UserError

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130


def debug_enabled(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get("MEGASNOW_DEBUG", "") not in ("", "0")


def warn(message):
    """Print `warning: message` on stderr (one line, never fatal)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def fail(message):
    """Raise the UserError that run_tool turns into `error: message` and exit 2."""
    raise UserError(message)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with `--debug`, defaults shown in --help, and one-line errors (`error: ...`, exit 2)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        if kwargs.get("add_help", True):
            self.add_argument("--debug", action="store_true", help="show the full traceback of any error")

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (skipped where it is None or a flag) and keeps the description's layout."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or action.help is None:
            return action.help
        return super()._get_help_string(action)


def run_tool(main, argv=None, user_errors=(), prog=None):
    """Call `main(argv)` under the rule above and return the exit status (pass it to sys.exit).

    `user_errors` adds exception types that count as user mistakes besides UserError (e.g. library errors that
    do not derive from it yet). A `main` that returns None counts as success.
    """
    prog = prog or os.path.basename(sys.argv[0] or "megasnow")
    debug = debug_enabled(argv)
    try:
        rc = main(argv)
        return EXIT_OK if rc is None else rc
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{prog}: interrupted (Ctrl-C); finished outputs are kept, rerun the same command to resume",
              file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except (UserError, *user_errors) as e:
        if debug:
            traceback.print_exc()
        print(f"error: {_one_line(e)}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except BrokenPipeError:  # `tool ... | head`: not an error
        sys.stderr.close()
        return EXIT_OK


def _one_line(e):
    text = str(e) or type(e).__name__
    return " ".join(text.split("\n")).strip()
