"""Inputs of any size in bounded memory: read texts lazily, predict a chunk at a time, hand each result on.

    for pred in predict_stream(predictor, read_lines("texts.txt")):
        print(json.dumps(pred.to_json()))

Memory then depends on the chunk size, not on the number of lines: a chunk's texts, windows and
predictions are dropped once its results are written. Only one line is ever held beyond the chunk,
so a 1,000,000-line file needs about what a 1,000-line file needs (measured in the README).
"""

import sys
import time
from itertools import islice

from ..guards.errors import UserError

CHUNK = 512  # texts per Predictor.predict call: big enough for full batches of similar lengths, small in memory


def read_lines(name):
    """The texts of a file, one per line ('-' for stdin), read lazily. The file is opened now, so a missing
    one is reported before any work; a blank or non-UTF-8 line raises a UserError naming file and line when
    the reader gets to it."""
    if name == "-":
        if sys.stdin is None:  # the process was started with stdin closed (`<&-`): Python then has none
            raise UserError("stdin is closed: give the texts as arguments or with --file FILE")
        return _texts(sys.stdin.buffer, "<stdin>")
    try:
        stream = open(name, "rb")
    except FileNotFoundError:
        raise UserError("file not found", name) from None
    except OSError as e:
        raise UserError(f"cannot read ({e.strerror})", name) from None
    return _texts(stream, name)


def _texts(stream, name):
    count = 0
    with stream:
        for count, line in enumerate(_lines(stream, name), 1):
            try:  # decoded line by line, so an encoding problem is reported with its line number
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"not UTF-8 (byte {e.start + 1} of the line)", name, count) from None
            if not text.strip():
                raise UserError("empty line: give one text per line", name, count)
            yield text
    if not count:
        raise UserError("no text in the file", name)


def _lines(stream, name="<stream>"):
    """The lines of a binary stream without their endings, split like bytes.splitlines (at LF, CRLF and a
    lone CR), one line in memory at a time. A read the system refuses (a disk error, a file like
    /proc/self/mem that opens but cannot be read) is a UserError naming the stream."""
    pieces = iter(stream)
    while True:
        try:
            raw = next(pieces, None)  # a piece ends at a LF (or at the end of the stream)
        except OSError as e:
            raise UserError(f"cannot read ({e.strerror})", name) from None
        if raw is None:
            return
        yield from raw.removesuffix(b"\n").removesuffix(b"\r").split(b"\r")


def predict_stream(predictor, texts, chunk=CHUNK, progress=None):
    """The predictions of `texts` (any iterable, e.g. `read_lines`), in order, computed `chunk` texts at a
    time; `progress(n)` is called with the number of texts done after each chunk."""
    texts, done = iter(texts), 0
    while batch := list(islice(texts, chunk)):
        yield from predictor.predict(batch)
        done += len(batch)
        if progress:
            progress(done)


class Progress:
    """"12,288 texts, 850/s" rewritten in place on a terminal; call it after each chunk, `end` once."""

    def __init__(self, stream=sys.stderr):
        self.stream, self.start, self.shown = stream, time.perf_counter(), False

    def __call__(self, done):
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        self.stream.write(f"\r{done:,} texts, {rate:,.0f}/s")
        self.stream.flush()
        self.shown = True

    def end(self):
        if self.shown:  # the next message starts on a line of its own
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False
