"""A path that the Rust-based readers (safetensors, tokenizers) can take.

They take paths as UTF-8 text only, while a file name on Linux may hold any byte but '/' and NUL (Python
keeps the bytes that are no UTF-8 as lone surrogates, and opens such a path fine). So a file under such a
path is opened by Python and handed over by its /proc/self/fd alias, which is plain ASCII.
"""

import os
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError


@contextmanager
def readable(path):
    """`path` as a str those readers accept, for the duration of the `with`."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        yield str(path)
        return
    if not Path("/proc/self/fd").is_dir():
        raise UserError("cannot be read here: the name is not UTF-8 (rename the folder)", path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise UserError("file not found", path) from None
    except OSError as e:
        raise UserError(f"cannot read ({e.strerror})", path) from None
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)
