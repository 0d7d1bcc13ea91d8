"""The one exception type a user ever sees.

Everything a user can fix (a bad path, a malformed file, an impossible flag) is raised as `UserError`
with a single-line message. The CLIs catch it, print the message to stderr and exit with code 2, so a
mistake never shows a traceback. Bugs stay ordinary exceptions: they should show one.
"""

import json


class UserError(Exception):
    """A problem in the user's input, explained in one line."""

    def __init__(self, message, path=None, line=None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + " ".join(str(message).split()))


def read_json(path, missing="file not found"):
    """The content of a JSON file; a missing, undecodable or malformed file is a UserError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(missing, path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"not valid JSON ({e})", path) from None
