"""Progress within long work (issue 38): one rewritten line on a terminal, a bounded number of plain lines
elsewhere, nothing with --quiet, and a run's first line says where it writes."""

import io
import os
import pty
import subprocess
import sys

import pytest
from conftest import ROOT

import minimtl.machinery.progress_line as progress_line
from minimtl.machinery.progress_line import ProgressLine, counted


class Clock:
    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now


class Batch:
    index = list(range(32))


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(progress_line, "time", fake)
    return fake


def run(line, clock, seconds_per_step, losses=None):
    for i, _ in enumerate(line):
        if losses:
            line.loss = losses[i]
        clock.now += seconds_per_step


@pytest.mark.parametrize("steps, seconds, most", [(1000, 0.3, 12), (100, 3.0, 11), (20, 0.2, 0), (10, 60.0, 10)])
def test_plain_lines_come_every_tenth_or_every_half_minute_never_a_flood(clock, steps, seconds, most):
    lines = []
    run(ProgressLine([Batch()] * steps, "epoch 1/3", lines.append, terminal=False), clock, seconds)
    assert len(lines) <= most and (steps * seconds < 10 or len(lines) >= 5)  # a short epoch says nothing
    for line in lines:
        assert line.startswith("epoch 1/3  ") and "/s" in line and "elapsed" in line


def test_a_plain_line_says_what_a_person_waits_for(clock):
    lines = []
    run(ProgressLine([Batch()] * 100, "epoch 2/6", lines.append, terminal=False), clock, 3.0,
        losses=[1.0] * 50 + [0.5] * 50)
    assert lines[0] == "epoch 2/6  10/100 batches  10%  loss 1.0000  11 sentences/s  0:30 elapsed, about 4:30 left"
    assert "loss 0.5000" in lines[-1] and "100/100 batches  100%" in lines[-1] and "left" not in lines[-1]


def test_on_a_terminal_one_line_is_rewritten_at_most_ten_times_a_second(clock):
    terminal, lines = io.StringIO(), []
    run(ProgressLine([Batch()] * 200, "feature cache", lines.append, terminal=terminal), clock, 0.01)
    shown = terminal.getvalue()
    assert lines == [] and "\n" not in shown
    assert 15 <= shown.count("\r") <= 25  # 2 s of work: about 20 redraws (and the final clearing)
    assert "feature cache  200/200 batches  100%" in shown and shown.endswith("\r\033[K")


def test_quiet_says_nothing(clock):
    terminal, lines = io.StringIO(), []
    run(ProgressLine([Batch()] * 100, "epoch 1/1", lines.append, quiet=True, terminal=terminal), clock, 3.0)
    assert lines == [] and terminal.getvalue() == ""


def test_a_run_on_a_terminal_shows_its_progress_and_where_it_writes(tiny_data, tiny_weights, tmp_path):
    def train(*flags):
        controller, terminal = pty.openpty()
        try:
            done = subprocess.Popen([sys.executable, "train.py", "--data", str(tiny_data), "--weights",
                                     str(tiny_weights), "--out", str(tmp_path / "run"), "--epochs", "1",
                                     "--batch-size", "4", "--overwrite", *flags], cwd=ROOT, stdout=subprocess.PIPE,
                                    stderr=terminal, text=True)
            os.close(terminal)
            terminal, shown = None, b""
            while True:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:  # the process closed its end
                    break
                if not chunk:
                    break
                shown += chunk
            out = done.communicate(timeout=300)[0]
            assert done.returncode == 0
            return out, shown.decode()
        finally:
            os.close(controller)
            if terminal is not None:
                os.close(terminal)

    out, shown = train()
    assert out.splitlines()[0] == f"run in {tmp_path / 'run'}: the best checkpoint, its logs and the state to " \
                                  "resume from are written there"
    assert "\repoch 1/1  " in shown and "batches" in shown and "sentences/s" in shown
    assert "\rscoring dev  " in shown and "\rscoring test  " in shown  # the evaluations after training, too
    assert "scoring" not in out  # the log has no progress: the terminal showed it
    out, shown = train("--quiet")
    assert "\r" not in shown


def test_the_loss_curve_keeps_at_most_its_points_each_a_running_mean(clock):
    line = ProgressLine([Batch()] * 1000, "epoch 1/3", terminal=False, points=100, quiet=True)
    run(line, clock, 0.01, losses=[float(i % 2) for i in range(1000)])  # 0, 1, 0, 1, ...: the mean is 0.5
    assert len(line.curve) == 100 and line.curve[-1] == [1.0, 0.5] and line.curve[0] == [0.01, 0.5]
    few = ProgressLine([Batch()] * 7, "epoch 1/3", terminal=False, points=100, quiet=True)
    run(few, clock, 0.01, losses=[3.0] * 7)
    assert [done for done, _ in few.curve] == [round(k / 7, 4) for k in range(1, 8)]  # fewer steps: one point each


def evaluate(line, clock, batches, seconds_per_batch):
    """What evaluation.head_outputs does with a run's forward: one call per batch, which the core makes itself."""
    forward = counted(lambda batch: clock.__setattr__("now", clock.now + seconds_per_batch), line)
    for _ in range(batches):
        forward(Batch())


@pytest.mark.parametrize("batches, seconds, most", [(10, 0.1, 0), (40, 0.1, 0), (200, 0.5, 11), (30, 2.0, 10)])
def test_an_evaluation_on_a_pipe_says_nothing_when_short_and_a_bounded_few_lines_when_long(clock, batches, seconds,
                                                                                           most):
    lines = []
    evaluate(ProgressLine(batches, "scoring dev", lines.append, terminal=False), clock, batches, seconds)
    assert len(lines) <= most and (batches * seconds < 10 or len(lines) >= 5)
    assert all(line.startswith("scoring dev  ") and "batches" in line for line in lines)


def test_an_evaluation_on_a_terminal_clears_its_line_once_its_last_batch_is_done(clock):
    terminal = io.StringIO()
    evaluate(ProgressLine(50, "scoring test", terminal=terminal), clock, 50, 0.05)
    shown = terminal.getvalue()
    assert "\rscoring test  50/50 batches  100%" in shown and shown.endswith("\r\033[K") and "\n" not in shown
    assert 20 <= shown.count("\r") <= 30  # 2.5 s: about 25 redraws, and the clearing


def test_work_of_unknown_length_counts_its_items_on_the_terminal(clock):
    terminal = io.StringIO()
    line = ProgressLine(None, "predicting", terminal=terminal, unit="texts")
    for _ in range(4):
        clock.now += 0.5
        line.step(512)
    line.end()
    shown = terminal.getvalue()
    assert "\rpredicting  2,048 texts  1,024 texts/s  0:02 elapsed\033[K" in shown and shown.endswith("\r\033[K")
    assert "batches" not in shown and "%" not in shown and "left" not in shown
