"""Inputs of any size in bounded memory: read texts lazily, predict a chunk at a time, hand each result on.

    for pred in predict_stream(predictor, read_lines("texts.txt")):
        print(json.dumps(pred.to_json()))

Memory then depends on the chunk size, not on the number of lines: a chunk's texts, windows and
predictions are dropped once its results are written. A line is read in pieces of at most MAX_LINE bytes,
so a file without newlines (or /dev/zero) is refused at its first MAX_LINE bytes, never read whole.

Lines are read in a thread of their own. From a file the chunks are full; from a pipe, a chunk is what has
arrived, never waiting more than WAIT for more once it has one: when a program writes a line at a time and
keeps the pipe open, each result comes as soon as its line is predicted, not at the pipe's end.
"""

import os
import stat
import sys
import threading
import time
from queue import Empty, Queue

from ..guards.errors import UserError

CHUNK = 512  # texts per Predictor.predictions call: big enough for full batches of similar lengths, small in memory
WAIT = 0.01  # seconds a chunk waits for more lines once it has one: a pipe's lines come out within about this
MAX_LINE = 16 << 20  # bytes of one line: 16 MiB is ~3 million words (predicted in windows), far past any text
_END = object()  # the reader thread's last item


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


def arrives_over_time(name):
    """Whether the lines of `name` ('-': stdin) come as another program writes them (a pipe, a terminal, a
    socket), rather than from a file that holds them all already."""
    try:
        mode = os.fstat(0).st_mode if name == "-" else os.stat(name).st_mode
    except OSError:  # read_lines says what is wrong with it
        return False
    return not stat.S_ISREG(mode)


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
    /proc/self/mem that opens but cannot be read) and a line longer than MAX_LINE bytes are UserErrors naming
    the stream."""
    count = 0
    while True:
        try:
            raw = stream.readline(MAX_LINE + 2)  # a piece ends at a LF, at the end of the stream, or at the bound
        except OSError as e:
            raise UserError(f"cannot read ({e.strerror})", name) from None
        if not raw:
            return
        text = raw.removesuffix(b"\n").removesuffix(b"\r")
        if len(text) > MAX_LINE:  # a line cut by the bound; lone CRs inside it are not looked for
            raise UserError(f"a line of more than {MAX_LINE:,} bytes (a file without line breaks?): give one text "
                            "per line", name, count + 1)
        lines = text.split(b"\r")
        count += len(lines)
        yield from lines


def predict_stream(predictor, texts, chunk=CHUNK, progress=None, wait=None, pace=lambda chunks: chunks):
    """The predictions of `texts` (any iterable, e.g. `read_lines`), in order, computed a chunk at a time: `chunk`
    texts, or with `wait` (seconds; for a pipe) as many as arrive within `wait` of the first; `progress(n)` is
    called with the number of texts of each chunk once it is done (ProgressLine.step). An error in reading `texts` is raised when its place
    is reached. `pace(chunks)`: the chunks, handed out as the caller wants them computed (threads.Paced).

    A thread reads `texts`, and only as many as asked for: never more than one chunk ahead of what is done."""
    wanted, arrived = threading.Semaphore(0), Queue()
    threading.Thread(target=_read_when_asked, args=(iter(texts), wanted, arrived), daemon=True).start()

    def chunks():
        asked, item = 0, None
        while item is not _END:
            wanted.release(chunk - asked)
            batch, asked, timeout, deadline = [], chunk, None, None  # the first text is waited for as long as it takes
            while len(batch) < chunk:
                try:
                    item = arrived.get(timeout=timeout)
                except Empty:
                    break
                asked -= 1
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                batch.append(item)
                if wait is not None:
                    deadline = deadline or time.monotonic() + wait
                    timeout = max(0.0, deadline - time.monotonic())
            if batch:
                yield batch

    for batch in pace(chunks()):
        yield from predictor.predictions(batch)
        if progress:
            progress(len(batch))


def _read_when_asked(texts, wanted, arrived):
    """Put the next of `texts` into the queue `arrived` each time `wanted` is released; then _END, or the
    exception that stopped the reading."""
    try:
        while True:
            wanted.acquire()
            text = next(texts, _END)
            arrived.put(text)
            if text is _END:
                return
    except BaseException as e:  # handed to the consumer, which raises it where the text would have been
        arrived.put(e)

