"""Large inputs: lines are read lazily, predicted a chunk at a time, written as they come.

Streaming must not change what comes out. Words, tags, labels and entity spans are equal exactly;
probabilities are equal up to float32 rounding, because a chunk batches its windows with different
neighbours than the whole input would, and a padded batch of another shape can differ in the last bit
(test_inference's batching test allows the same), which can move a rounded 4th decimal by one.
"""

import io
import itertools
import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from hypothesis import given
from hypothesis import strategies as st

from minimtl import UserError
from minimtl.machinery.predictor import format_prediction
from minimtl.machinery.streaming import CHUNK, _lines, predict_stream, read_lines

TEXTS = ["Alice Smith flew from Paris to Berlin last summer.", "Book a table", "Paris",
         " ".join(["Alice met Bob in Paris and they drove to the old town of Berlin ."] * 10)]  # several windows


pytestmark = pytest.mark.usefixtures("one_thread")  # small, predictor, one_thread: small_checkpoint.py


def assert_same(streamed, whole):
    """Equal predictions, probabilities and confidences up to one unit of their 4th decimal."""
    assert len(streamed) == len(whole)
    for a, b in zip(streamed, whole):
        a, b = dict(a), dict(b)
        assert a.pop("label_probability") == pytest.approx(b.pop("label_probability"), abs=1.5e-4)
        assert a.pop("labels") == pytest.approx(b.pop("labels"), abs=1.5e-4)
        ea, eb = a.pop("entities"), b.pop("entities")
        assert [e["confidence"] for e in ea] == pytest.approx([e["confidence"] for e in eb], abs=1.5e-4)
        assert [{k: v for k, v in e.items() if k != "confidence"} for e in ea] == \
            [{k: v for k, v in e.items() if k != "confidence"} for e in eb]
        assert a == b  # text, words, tags and the label itself: exactly


def many_texts(n):
    return [f"{TEXTS[i % len(TEXTS)]} {i}" for i in range(n)]


def test_chunks_give_the_predictions_of_one_call(predictor):
    texts = many_texts(23)
    whole = [p.to_json() for p in predictor.predictions(texts)]
    for chunk in (1, 5, 23, 100):
        assert_same([p.to_json() for p in predict_stream(predictor, texts, chunk)], whole)


def test_an_endless_input_is_consumed_one_chunk_at_a_time(predictor):
    pulled = 0

    def endless():
        nonlocal pulled
        for text in itertools.cycle(TEXTS):
            pulled += 1
            yield text

    first = list(itertools.islice(predict_stream(predictor, endless(), chunk=4), 6))
    assert [p.text for p in first] == (TEXTS * 2)[:6] and pulled == 8  # two chunks read, nothing more
    done = []
    list(predict_stream(predictor, TEXTS * 3, chunk=5, progress=done.append))
    assert done == [5, 5, 2]  # the texts of each chunk, once it is done


@given(st.lists(st.sampled_from([b"a", b"b c", b"\r", b"\n", b"\r\n", b"\xc3\xa9", b" ", b"\x85", b"\x0b"]),
                max_size=12))
def test_lines_split_like_bytes_splitlines(pieces):
    data = b"".join(pieces)
    assert list(_lines(io.BytesIO(data))) == data.splitlines()


def test_bad_lines_are_named_when_reached(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_bytes(b"one\r\ntwo\n\ncaf\xe9\n")
    lines = read_lines(path)
    assert [next(lines), next(lines)] == ["one", "two"]  # lazily: the error is still ahead
    with pytest.raises(UserError, match=r"texts.txt:3: empty line"):
        next(lines)
    path.write_bytes(b"one\ncaf\xe9\n")
    with pytest.raises(UserError, match=r"texts.txt:2: not UTF-8 \(byte 4 of the line\)"):
        list(read_lines(path))
    path.write_bytes(b"")
    with pytest.raises(UserError, match="no text in the file"):
        list(read_lines(path))
    with pytest.raises(UserError, match="file not found"):
        read_lines(tmp_path / "missing.txt")  # at once, before any line is asked for


def infer(*args, stderr=subprocess.PIPE):
    return subprocess.run([sys.executable, "infer.py", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=stderr, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_cli_streams_across_chunks_and_equals_one_call(small, predictor, tmp_path):
    texts = many_texts(CHUNK + 40)  # two chunks
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    whole = predictor.predictions(texts)
    done = infer("--checkpoint", small, "--file", path, "--json")
    assert done.returncode == 0 and done.stderr == "", done.stderr  # no progress line: stderr is no terminal
    assert_same([json.loads(line) for line in done.stdout.splitlines()], [p.to_json() for p in whole])
    human = infer("--checkpoint", small, "--file", path)
    assert human.returncode == 0
    blocks = human.stdout.removesuffix("\n").split("\n\n")  # one block per text, a blank line between
    assert len(blocks) == len(texts)
    first_lines = [block.splitlines()[0] for block in blocks]
    assert first_lines == [format_prediction(p).splitlines()[0] for p in whole]


def test_a_bad_line_stops_after_the_chunks_before_it(small, tmp_path):
    texts = many_texts(CHUNK + 10)
    texts[CHUNK + 4] = "   "
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    done = infer("--checkpoint", small, "--file", path, "--json")
    assert done.returncode == 2
    assert done.stderr == f"error: {path}:{CHUNK + 5}: empty line: give one text per line\n"
    assert [json.loads(line)["text"] for line in done.stdout.splitlines()] == texts[:CHUNK]  # already written


def test_progress_only_on_a_terminal(small, tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(many_texts(30)) + "\n", encoding="utf-8")
    controller, terminal = pty.openpty()
    try:
        done = infer("--checkpoint", small, "--file", path, "--json", stderr=terminal)
        os.close(terminal)
        terminal = None
        shown = b""
        while True:
            try:
                piece = os.read(controller, 4096)
            except OSError:  # the terminal's other end is closed: all was read
                break
            if not piece:
                break
            shown += piece
    finally:
        os.close(controller)
        if terminal is not None:
            os.close(terminal)
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 30
    # One line, rewritten in place (progress_line.py), and cleared once the texts are done.
    assert shown.startswith(b"\rpredicting  30 texts  ") and b" texts/s  " in shown and shown.endswith(b"\r\033[K")
    assert b"\n" not in shown


def test_a_line_is_read_in_bounded_pieces(monkeypatch):
    import minimtl.machinery.streaming as streaming
    monkeypatch.setattr(streaming, "MAX_LINE", 8)
    assert list(_lines(io.BytesIO(b"12345678\nab\r\n"))) == [b"12345678", b"ab"]  # 8 bytes: the most a line may be
    lines = _lines(io.BytesIO(b"ok\r\n" + b"x" * 9 + b"\n"), "f.txt")
    assert next(lines) == b"ok"
    with pytest.raises(UserError, match=r"^f.txt:2: a line of more than 8 bytes \(a file without line breaks\?\)"):
        next(lines)


@pytest.mark.parametrize("source", ["sparse", "/dev/zero"])
def test_a_huge_file_without_line_breaks_is_one_line_in_bounded_memory(small, tmp_path, source):
    if source == "sparse":  # 1 GB of zero bytes, taking no disk
        source = tmp_path / "huge.txt"
        with open(source, "wb") as f:
            f.truncate(1 << 30)
    # An address-space cap a little above what the model needs: reading the file whole would break it.
    code = ("import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30)); "
            f"sys.argv = ['infer.py', '--checkpoint', {str(small)!r}, '--file', {str(source)!r}]; "
            "runpy.run_path('infer.py', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"error: {source}:1: a line of more than 16,777,216 bytes (a file without line breaks?): " \
                          "give one text per line\n"


def test_from_a_pipe_kept_open_each_result_comes_within_a_second_of_its_line(small):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | {"OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "infer.py", "--checkpoint", str(small), "--json"], cwd=ROOT,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        for i, text in enumerate(TEXTS):
            process.stdin.write(f"{text}\n".encode())
            process.stdin.flush()
            limit = 120 if i == 0 else 1.0  # the first waits for the model to load
            start = time.monotonic()
            ready, _, _ = select.select([process.stdout], [], [], limit)
            assert ready, f"no result within {limit} s of line {i + 1}"
            line = process.stdout.readline()
            assert json.loads(line)["text"] == text and time.monotonic() - start < limit
        process.stdin.close()
        assert process.wait(timeout=60) == 0 and process.stdout.read() == b""
    finally:
        process.kill()
