"""The base class of every mistake a user can fix (a bad flag, key, file or record).

Command-line tools answer a UserError with one line, `error: <message>`, and exit status 2
(megasnow.utils.cli.run_tool); anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem in what the user gave us; the message names the file/line, flag or key and what to change."""
