"""The operating system says no (issue 25, class 5): a full disk during a save, a read-only file system when a
leftover must be put back, a path that is not UTF-8. One line that says what happened and what is intact."""

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

import minimtl.machinery.resume as resume
from minimtl import UserError
from minimtl.machinery.settings import RunConfig
from minimtl.machinery.checkpoint import load_checkpoint, load_predictor
from minimtl.machinery.run import train

QUIET = lambda line: None  # noqa: E731


def config(tiny_data, tiny_weights, out, **settings):
    return RunConfig(data=[str(tiny_data)], weights=str(tiny_weights), out=str(out), batch_size=16, patience=0,
                       device="cpu", **settings)


def test_a_full_disk_during_a_save_stops_with_one_line_and_keeps_the_last_good_epoch(tiny_data, tiny_weights,
                                                                                     tmp_path, monkeypatch):
    out = tmp_path / "run"
    real, calls = resume.save_tensors, []

    def disk_full_in_epoch_2(tensors, path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 2:  # each epoch's resume state writes two files
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(tensors, path, *args, **kwargs)
    monkeypatch.setattr(resume, "save_tensors", disk_full_in_epoch_2)
    with pytest.raises(UserError) as error:
        train(config(tiny_data, tiny_weights, out, epochs=3), log=QUIET)
    message = str(error.value)
    assert "cannot save epoch 2 (No space left on device)" in message
    assert "the state after epoch 1 is saved; continue with: python train.py --resume" in message
    monkeypatch.undo()
    assert load_checkpoint(out)[1]["epoch"] == 1  # epoch 1, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the half-written temporary is gone


def test_a_leftover_that_cannot_be_put_back_is_named(tmp_path, small, monkeypatch):
    # A save killed between its two renames leaves the complete previous version as .NAME.old-PID.
    run = tmp_path / "run"
    leftover = tmp_path / ".run.old-999999999"  # no such process: its save is over
    shutil.copytree(small, leftover)

    def read_only(self, target):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(Path, "rename", read_only)
    with pytest.raises(UserError, match=r"\.run\.old-999999999, cannot be put back here \(Read-only file system\)"):
        load_predictor(run)
    monkeypatch.undo()
    assert load_predictor(run).tags  # where it can, the leftover is put back and loads


def test_a_run_under_a_path_that_is_not_utf8_trains_resumes_and_predicts(tiny_data, tiny_weights, tmp_path):
    out = os.fsencode(tmp_path) + b"/run-\xff"  # a byte that is no UTF-8: Python sees it as a lone surrogate
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    first = subprocess.run([sys.executable, "train.py", "--data", str(tiny_data), "--weights", str(tiny_weights),
                            "--out", out, "--epochs", "1", "--batch-size", "16"], cwd=ROOT, capture_output=True,
                           env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([sys.executable, "train.py", "--resume", out], cwd=ROOT, capture_output=True, env=env,
                           timeout=300)
    assert again.returncode == 2 and b"this run finished, and its resume/" in again.stderr  # read, and understood
    inferred = subprocess.run([sys.executable, "infer.py", "--checkpoint", out, "Alice went to Paris."], cwd=ROOT,
                              capture_output=True, env=env, timeout=300)
    assert inferred.returncode == 0, inferred.stderr
