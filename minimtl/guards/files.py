"""The files of a checkpoint, read so that a bad one is one line: its tensors and its tokenizer.

The Rust-based readers (safetensors, tokenizers) take paths as UTF-8 text only, while a file name on Linux
may hold any byte but '/' and NUL (Python keeps the bytes that are no UTF-8 as lone surrogates, and opens
such a path fine). So a file under such a path is opened by Python and handed over by its /proc/self/fd
alias, which is plain ASCII.
"""

import os
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file
from tokenizers import Tokenizer

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


def read_state_dict(path):
    """The tensors of a safetensors file, as a state dict; a damaged file is a UserError."""
    if not Path(path).is_file():  # safetensors says so only as a RuntimeError, like any other failure
        raise UserError("weights file not found", path)
    try:
        with readable(path) as name:
            return load_file(name)
    except FileNotFoundError:
        raise UserError("weights file not found", path) from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"not a readable safetensors file ({e})", path) from None


def read_tokenizer_file(path):
    """The `tokenizers.Tokenizer` saved at `path` (a tokenizer.json); an unreadable one is a UserError."""
    try:
        with readable(path) as name:
            return Tokenizer.from_file(name)
    except Exception as e:  # the library's failures are plain Exceptions
        raise UserError(f"cannot read the tokenizer: {e}", path=path) from None
