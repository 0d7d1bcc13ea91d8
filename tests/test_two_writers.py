"""Two `train.py` processes on one --out: exactly one trains, the other is refused at once and touches nothing.

The winner's run must be exactly the run it would have been alone (same seed: the same weights, bit for bit,
and the same results.json), and the loser must stop with exit code 2 and one line naming the run directory:
either the winner's lock ("another training process (pid N)") or, if the winner has saved an epoch by then,
its run ("already holds a run", since the loser has no --overwrite). Nothing is left beside --out.

Two ways the race happens:

* started together: two plain `python train.py` at the same moment, racing through imports and loading;
* the second one started while the first one is surely training: once the first one's lock file
  (`.out.lock`, beside --out) exists. A fresh process spends ~2 s importing torch, about as long as the whole
  tiny run trains, so the second one is a Python that has already imported what train.py imports and waits
  for the lock file; then it runs train.py exactly as `python train.py ARGS` would (runpy, as __main__).
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT
from minimtl.machinery.checkpoint import load_checkpoint

TIMEOUT = 240  # seconds for anything to happen; a run takes ~5
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1"}

# A python that imports what train.py imports, says it is ready (creates argv[1]), waits until argv[2]
# exists, and then runs train.py with the remaining arguments as `python train.py ...` would.
WAITING_TRAIN_PY = """
import runpy, sys, time
from pathlib import Path
import train  # torch, minimtl: the ~2 s a fresh process needs before it can do anything
ready, go, args = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
ready.touch()
while not go.exists():
    time.sleep(0.002)
sys.argv = ["train.py", *args]
runpy.run_path("train.py", run_name="__main__")
"""


def train_args(tiny_data, tiny_weights, out):
    return ["--data", tiny_data, "--weights", tiny_weights, "--out", out, "--epochs", "2", "--batch-size", "8",
            "--device", "cpu", "--seed", "0", "--keep-resume"]  # the resume state is compared


def start(argv):
    return subprocess.Popen([sys.executable, *map(str, argv)], cwd=ROOT, env=ENV, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(condition, processes, what):
    """Poll `condition` every 2 ms; fail (killing `processes`) if one of them ends first or time runs out."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        ended = [p for p in processes if p.poll() is not None]
        if ended or time.monotonic() > deadline:
            for p in processes:
                p.kill()
            outputs = [p.communicate() for p in processes]
            pytest.fail(f"never saw {what}; exits {[p.returncode for p in processes]}: {outputs}")
        time.sleep(0.002)


def finish(processes):
    """Wait for all; (stdout, stderr, the monotonic time its end was seen) per process."""
    ends = {}
    deadline = time.monotonic() + TIMEOUT
    while len(ends) < len(processes):
        for i, p in enumerate(processes):
            if i not in ends and p.poll() is not None:
                ends[i] = time.monotonic()
        if time.monotonic() > deadline:
            for p in processes:
                p.kill()
            pytest.fail("a training process did not end")
        time.sleep(0.002)
    # Both ended, so their pipes hold at most a few KiB of log each: nothing could block on them.
    return [(*p.communicate(), ends[i]) for i, p in enumerate(processes)]


@pytest.fixture(scope="module")
def solo(tmp_path_factory, tiny_data, tiny_weights):
    """The same run, alone."""
    out = tmp_path_factory.mktemp("solo") / "run"
    p = start(["train.py", *train_args(tiny_data, tiny_weights, out)])
    _, stderr, _ = finish([p])[0]
    assert p.returncode == 0 and not stderr, stderr
    return out


def check_race(processes, outputs, out, solo):
    """One winner (exit 0) whose run equals the solo run, one loser (exit 2) refused before the winner ended."""
    codes = sorted(p.returncode for p in processes)
    assert codes == [0, 2], [(p.returncode, o[1][-2000:]) for p, o in zip(processes, outputs)]
    winner, loser = (0, 1) if processes[0].returncode == 0 else (1, 0)
    (_, winner_err, winner_end), (_, loser_err, loser_end) = outputs[winner], outputs[loser]
    assert not winner_err, winner_err
    # The loser: one line, naming the run directory and why, and it ended while the winner was still training.
    assert "Traceback" not in loser_err and loser_err.endswith("\n"), loser_err
    [line] = loser_err.splitlines()
    assert line.startswith(f"error: {out}: "), line
    locked = re.search(r"another training process \(pid (\d+|unknown)\) is writing this run directory", line)
    assert locked or "already holds a run" in line, line
    if locked and locked.group(1) != "unknown":  # "unknown": the lock taken, its holder's pid not yet written
        assert int(locked.group(1)) == processes[winner].pid, line
    assert loser_end < winner_end, f"the loser ended {loser_end - winner_end:.2f} s after the winner"
    # Nothing of either is left beside the run: no lock, no temporary, no probe.
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    # The winner's run is whole, loads, and is the run it would have been alone.
    model, meta = load_checkpoint(out)
    assert meta["epoch"] in (1, 2) and model is not None
    for name in ("model.safetensors", "resume/model.safetensors", "resume/optimizer.safetensors"):
        a, b = load_file(out / name), load_file(solo / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert json.loads((out / "results.json").read_text()) == json.loads((solo / "results.json").read_text())
    assert json.loads((out / "run.json").read_text())["finished"] is True
    return winner


def test_two_runs_started_together(tmp_path, tiny_data, tiny_weights, solo):
    out = tmp_path / "race" / "run"
    out.parent.mkdir()
    processes = [start(["train.py", *train_args(tiny_data, tiny_weights, out)]) for _ in range(2)]
    check_race(processes, finish(processes), out, solo)


def test_a_second_run_started_while_the_first_trains(tmp_path, tiny_data, tiny_weights, solo):
    out = tmp_path / "race" / "run"
    out.parent.mkdir()
    lock, ready = out.parent / f".{out.name}.lock", tmp_path / "second-ready"
    second = start(["-c", WAITING_TRAIN_PY, ready, lock, *train_args(tiny_data, tiny_weights, out)])
    wait_until(ready.exists, [second], "the second process ready")
    first = start(["train.py", *train_args(tiny_data, tiny_weights, out)])
    # The second one goes the moment the lock file appears: the first one has then checked --out and is
    # taking the lock, with its whole training still ahead of it.
    outputs = finish([first, second])
    assert check_race([first, second], outputs, out, solo) == 0, "the second process won"
