"""The one exception type a user ever sees, and the bounded readers of what a user hands us.

Everything a user can fix (a bad path, a malformed file, an impossible flag) is a `UserError` with a
one-line message, which the CLIs print before exiting with code 2; bugs stay ordinary exceptions. A file can
be hostile as well as wrong (a 1 MB word, a terminal escape, JSON nested 100,000 deep): a user's text is
shown only through `quote`, `UserError` escapes and bounds its line, and `parse_json` refuses nesting
deeper than any file of ours has instead of running out of stack.
"""

import json
import re

QUOTE_CHARS = 40  # of a user's text in an error line: enough to find it in the file, never a screenful
MAX_LINE = 1000  # characters of an error line; a longer one is cut in the middle (both ends say the most)
MAX_DEPTH = 100  # nesting of a JSON document; ours need under 10, and Python's parser recurses per level

_JSON_SPECIAL = re.compile(r'[\[\]{}"\\]')  # what the depth count looks at: brackets, quotes, escapes


class UserError(Exception):
    """A problem in the user's input, explained in one line."""

    def __init__(self, message, path=None, line=None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        text = _printable(where + " ".join(str(message).split()))
        if len(text) > MAX_LINE:
            text = f"{text[:MAX_LINE // 2]} ... {text[-MAX_LINE // 2:]}"
        super().__init__(text)


def quote(text, limit=QUOTE_CHARS):
    """A user's text as an error line quotes it: repr-escaped, so no newline or control character gets
    through, and cut to `limit` characters with the full length said, so a 1 MB word costs one line."""
    text = str(text)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


def _printable(text):
    """`text` with every character a terminal would act on (controls, bidi overrides, ...) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def parse_json(text, path, line=None):
    """json.loads for a document a user gave us: nesting beyond MAX_DEPTH, an integer too long to convert
    and malformed JSON are each a UserError naming `path` (and `line`, for one line of a JSON-lines file)."""
    if text.count("[") + text.count("{") > MAX_DEPTH:  # else it cannot be nested deeper: no scan needed
        _check_depth(text, path, line)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        at = f"column {e.colno}" if line is not None else f"line {e.lineno} column {e.colno}"
        raise UserError(f"not valid JSON ({e.msg}, {at})", path, line) from None
    except ValueError:  # json's other refusal: an integer of more digits than Python converts (4300)
        raise UserError("a JSON number of more digits than Python converts (4300)", path, line) from None


def _check_depth(text, path, line):
    """Count the nesting of `text` in one pass over its brackets, quotes and backslashes (a bracket inside a
    string does not count), never backtracking: a line built to be slow to scan is not."""
    depth, in_string, escaped = 0, False, -1
    for special in _JSON_SPECIAL.finditer(text):
        at, char = special.start(), special.group()
        if at == escaped:  # the character after a backslash: \" and \\ are text
            continue
        if char == "\\":
            escaped = at + 1
        elif char == '"':
            in_string = not in_string
        elif not in_string:
            depth += 1 if char in "[{" else -1
            if depth > MAX_DEPTH:
                raise UserError(f"JSON nested deeper than {MAX_DEPTH} levels (at character {at + 1:,}): no file "
                                "minimtl reads is", path, line)


def read_json(path, missing="file not found"):
    """The content of a JSON file; a missing, undecodable or malformed file is a UserError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise UserError(missing, path) from None
    except UnicodeDecodeError as e:
        raise UserError(f"not valid JSON ({e})", path) from None
    except OSError as e:  # a directory, a file we may not read
        raise UserError(f"cannot read ({e.strerror})", path) from None
    return parse_json(text, path)
