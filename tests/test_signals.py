"""Ctrl-C and failed starts (machinery/interrupts.py, run.py): a stop comes within the batch, waits only for a
save, says only what is true, and leaves nothing behind but the run itself."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT

from minimtl import UserError
from minimtl.machinery.interrupts import CtrlC, what_is_saved
from minimtl.machinery.resume import resume_config
from minimtl.machinery.run import Progress, train

QUIET = lambda line: None  # noqa: E731


def test_ctrl_c_outside_a_save_stops_at_once():
    ctrl_c = CtrlC()
    with pytest.raises(KeyboardInterrupt):
        ctrl_c.handler(signal.SIGINT, None)


def test_a_first_ctrl_c_during_a_save_waits_for_it_and_a_second_does_not():
    ctrl_c, finished = CtrlC(), []
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c.saving():
            ctrl_c.handler(signal.SIGINT, None)  # asks only
            finished.append("save")
    assert finished == ["save"]  # the save ended, then the stop came
    ctrl_c = CtrlC()
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c.saving():
            ctrl_c.handler(signal.SIGINT, None)
            ctrl_c.handler(signal.SIGINT, None)  # the second one does not wait
            finished.append("never")
    assert finished == ["save"]


def test_a_swallowed_ctrl_c_is_still_honoured_at_the_next_batch():
    ctrl_c = CtrlC()
    try:
        ctrl_c.handler(signal.SIGINT, None)
    except KeyboardInterrupt:
        pass  # as in a finalizer run by garbage collection: printed as "Exception ignored", then dropped
    with pytest.raises(KeyboardInterrupt):
        ctrl_c.check()


def test_the_message_names_the_last_save_that_ended_not_the_last_epoch():
    progress = Progress(epoch=2, saved=1)  # epoch 2 ended, and its save was cut short
    message = what_is_saved(progress, "runs/x", "python train.py")
    assert "the state after epoch 1 is saved" in message and "epoch 2" not in message
    assert "nothing was saved" in what_is_saved(Progress(epoch=1, saved=0), "runs/x", "python train.py")


def test_ctrl_c_during_the_feature_cache_stops_before_the_cache_is_done(tmp_path, checkpoint_dir):
    # The real encoder over the demo set: a cache of many batches, so a stop within one batch is visible as a
    # cache that never finished (its "feature cache:" line is printed when it is done).
    process = subprocess.Popen(
        [sys.executable, "train.py", "--freeze", "backbone", "--weights", str(checkpoint_dir), "--out",
         str(tmp_path / "run")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    for line in process.stdout:  # the recipe's last line comes right before the cache starts
        lines.append(line)
        if line.startswith("  training steps:"):
            break
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    lines += out.splitlines()
    assert process.returncode == 130, err
    assert not any(line.startswith("feature cache:") for line in lines)
    assert err.strip() == "interrupted during epoch 1: no epoch had finished, so nothing was saved"
    assert not (tmp_path / "run").exists() and os.listdir(tmp_path) == []  # no lock file, no temporary


def damage_optimizer(run):
    (run / "resume" / "optimizer.safetensors").write_bytes(b"not a safetensors file")


def damage_settings(run):
    state = json.loads((run / "resume" / "state.json").read_text())
    state["config"]["epochs"] = "3"
    (run / "resume" / "state.json").write_text(json.dumps(state))


def change_data(run):
    state = json.loads((run / "resume" / "state.json").read_text())
    state["data_sha256"] = {name: "0" * 64 for name in state["data_sha256"]}
    (run / "resume" / "state.json").write_text(json.dumps(state))


@pytest.mark.parametrize("damage", [damage_optimizer, damage_settings, change_data])
def test_a_failed_resume_leaves_no_lock_file_and_the_run_as_it_was(interrupted_run, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(interrupted_run, run)
    damage(run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(UserError):
        train(resume_config(run), log=QUIET, resume=True)
    assert sorted(os.listdir(tmp_path)) == ["run"]  # no .run.lock, no .run.tmp-PID
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
