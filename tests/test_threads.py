"""A run computes with the thread count that is fastest now (machinery/threads.py): a first guess from the cores
other processes leave idle, then measured on the first batches of every phase, unless a count is fixed."""

import os
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT

import minimtl.machinery.threads as threads


@pytest.fixture
def auto(monkeypatch):
    """No OMP_NUM_THREADS (the tests fix it, conftest.py), and torch's count restored afterwards."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cores(monkeypatch):
    """Two usable cores, and no count said yet in this process."""
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(threads.Paced, "said", None)


def paced(seconds, n=10, fixed=None, phase="epoch 1"):
    """The thread count each of `n` batches was handed out with, and the lines said, when the products take
    `seconds` (count -> seconds, or a function of the batch's index giving that)."""
    used, lines = [], []
    timings = seconds if callable(seconds) else (lambda i: seconds)
    index = {"i": 0}
    threads.product_seconds = lambda counts: {c: timings(index["i"])[c] for c in counts}
    for i, batch in enumerate(threads.Paced(list(range(n)), fixed, phase, lines.append)):
        index["i"] = i
        used.append(torch.get_num_threads())
    return used, lines


def test_the_count_measured_fastest_now_is_set_and_said_once(auto, cores, monkeypatch):
    monkeypatch.setattr(threads, "product_seconds", threads.product_seconds)  # restored after the test
    used, lines = paced({1: 0.012, 2: 0.400})  # beside a busy process in another session
    assert set(used) == {1}
    assert lines == ["epoch 1: 1 thread (the fastest now on a few small products: 1 thread 12.0 ms, 2 threads "
                     "400.0 ms)"]
    used, lines = paced({1: 0.012, 2: 0.500}, phase="epoch 2")
    assert set(used) == {1} and lines == []  # the same count: not said again
    used, lines = paced({1: 0.012, 2: 0.006}, phase="epoch 3")  # quiet again
    assert set(used) == {2} and lines[0].startswith("epoch 3: 2 threads (the fastest now")


def test_a_fixed_count_is_kept_and_nothing_is_measured(auto, cores, monkeypatch):
    monkeypatch.setattr(threads, "product_seconds", lambda counts: pytest.fail("a fixed count measures nothing"))
    lines = []
    assert [torch.get_num_threads() for _ in threads.Paced([0, 1], 1, "epoch 1", lines.append)] == [1, 1]
    assert lines == ["epoch 1: 1 thread (--threads)"]
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(2)
    assert [torch.get_num_threads() for _ in threads.Paced([0, 1], None, "epoch 2", lines.append)] == [2, 2]


class Clock:
    """threads.time for a test: perf_counter reads a clock that the test advances."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def test_a_long_phase_measures_again(auto, cores, monkeypatch):
    monkeypatch.setattr(threads, "product_seconds", threads.product_seconds)
    clock = Clock()
    monkeypatch.setattr(threads, "time", clock)
    lines, used = [], []
    busy = {1: 0.012, 2: 0.400}
    threads.product_seconds = lambda counts: busy if clock.now < 100 else {1: 0.012, 2: 0.006}
    for batch in threads.Paced(list(range(40)), None, "feature cache", lines.append):
        used.append(torch.get_num_threads())
        clock.now += 5.0  # seconds per batch: the neighbour stops after 100 s
    assert used[:12] == [1] * 12 and used[-10:] == [2] * 10
    assert [line.split(" (")[0] for line in lines] == ["feature cache: 1 thread", "feature cache: 2 threads"]


def test_measuring_leaves_the_count_and_the_random_numbers_as_they_were(auto):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    seconds = threads.product_seconds([1, 2])  # a seeded run measures between its random draws
    assert torch.equal(torch.rand(3), expected)
    assert set(seconds) == {1, 2} and all(t > 0 for t in seconds.values()) and torch.get_num_threads() == 2


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: there is no count to choose")
def test_a_frozen_run_beside_a_busy_process_in_another_session_keeps_its_speed(checkpoint_dir, tmp_path):
    # The busy process is at nice 19 but in a session of its own, as when started from another terminal: with
    # autogroup scheduling it then takes a whole core anyway, which /proc/stat does not show; the run sees it
    # by measuring (Paced). Before, two threads beside it ran 31x slower. The most a run can keep is what one
    # thread does on the quiet machine: it must keep 80% of that, and so at least half its quiet speed.
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}

    def seconds(name, *flags):
        start = time.perf_counter()
        subprocess.run([sys.executable, "train.py", "--freeze", "backbone", "--epochs", "1", "--weights",
                        str(checkpoint_dir), "--out", str(tmp_path / name), *flags], cwd=ROOT, env=env, check=True,
                       capture_output=True, timeout=600)
        return time.perf_counter() - start

    quiet, one_thread, loaded = [], [], []
    for i in range(2):  # alternating, so that a slow moment of the machine falls on every kind
        quiet.append(seconds(f"quiet-{i}"))
        one_thread.append(seconds(f"one-{i}", "--threads", "1"))
        busy = subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", "while True: pass"],
                                start_new_session=True)
        try:
            loaded.append(seconds(f"busy-{i}"))
        finally:
            busy.kill()
            busy.wait()
    assert min(one_thread) / min(loaded) >= 0.8 and min(quiet) / min(loaded) >= 0.5, (quiet, one_thread, loaded)
