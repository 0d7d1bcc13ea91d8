"""A run computes with the cores other processes leave idle (machinery/threads.py), unless a count is fixed."""

import os
import subprocess
import sys
import time

import pytest
import torch

import minimtl.machinery.threads as threads
from minimtl.machinery.settings import RunConfig


@pytest.fixture
def auto(monkeypatch):
    """No OMP_NUM_THREADS (the tests fix it, conftest.py), and torch's count restored afterwards."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("idle, expected", [(0.0, 1), (0.4, 1), (1.0, 1), (1.6, 2), (2.0, 2), (None, 2)])
def test_the_count_is_the_idle_cores_at_least_one(auto, monkeypatch, idle, expected):
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(threads, "idle_cores", lambda: idle)
    lines = []
    assert threads.choose_threads(RunConfig(), "epoch 1", lines.append) == expected == torch.get_num_threads()
    assert lines == [f"epoch 1: {expected} thread{'s' * (expected > 1)} (the cores other processes left idle)"]
    assert threads.choose_threads(RunConfig(), "epoch 2", lines.append, before=expected) == expected
    assert len(lines) == 1  # said again only when it changes


def test_a_fixed_count_is_kept_whatever_the_load(auto, monkeypatch):
    monkeypatch.setattr(threads, "idle_cores", lambda: pytest.fail("a fixed count looks at no load"))
    assert threads.choose_threads(RunConfig(threads=1), "epoch 1", print) == 1 == torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    assert threads.choose_threads(RunConfig(), "epoch 1", print) == 1


def idle_beside(prefix):
    spin = subprocess.Popen(prefix + [sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # started and spinning
        return threads.idle_cores(0.5)
    finally:
        spin.kill()
        spin.wait()


def test_a_busy_process_beside_shows_as_a_core_that_is_not_free():
    idle = idle_beside([])
    assert idle is not None and idle <= os.cpu_count() - 0.5


def test_a_busy_process_of_lower_priority_leaves_its_core_free():
    # Against the same process at our priority, so that other work on the machine counts in both.
    assert idle_beside(["nice", "-n", "19"]) >= idle_beside([]) + 0.5
