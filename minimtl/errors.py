"""The one exception type a user ever sees.

Everything a user can fix (a bad path, a malformed file, an impossible flag) is raised as `UserError`
with a single-line message. The CLIs catch it, print the message to stderr and exit with code 2, so a
mistake never shows a traceback. Bugs stay ordinary exceptions: they should show one.
"""


class UserError(Exception):
    """A problem in the user's input, explained in one line."""

    def __init__(self, message, path=None, line=None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + " ".join(str(message).split()))
