"""Interrupted runs: resuming is exact, a SIGKILL mid-save damages nothing, Ctrl-C exits cleanly."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file

from minimtl import UserError
from minimtl.machinery.checkpoint import load_predictor
from minimtl.machinery.interrupts import Interrupted
from minimtl.machinery.settings import RunConfig
from minimtl.machinery.resume import resume_config
from minimtl.machinery.run import train


def config(tiny_data, tiny_weights, out, **overrides):
    settings = dict(epochs=3, batch_size=8, lr_backbone=1e-3, lr_heads=1e-2, patience=0) | overrides
    return RunConfig(data=[str(tiny_data)], weights=str(tiny_weights), out=str(out), **settings)


def stop_after_epoch(n):
    def log(line):
        if line.startswith(f"epoch {n:>2}/"):
            raise KeyboardInterrupt
    return log


def without_timings(record):
    return {k: v for k, v in record.items() if k not in ("seconds", "train_seconds", "sentences_per_second")}


@pytest.mark.parametrize("overrides", [{}, {"unfreeze_schedule": "0,1,all", "grad_accum": 2, "layer_decay": 0.5},
                                       {"crf": True}, {"crf": True, "precision": "bf16"},
                                       {"freeze": ["backbone"], "crf": True},
                                       {"freeze": ["backbone"], "feature_cache": "off"},  # no cache: on the fly
                                       {"freeze": ["backbone"], "feature_cache": "disk"},
                                       {"word_shape": True, "context": True},
                                       {"word_shape": True, "context": True, "lora": 2},
                                       {"word_shape": True, "context": True, "freeze": ["backbone"]}])
def test_resumed_run_equals_the_uninterrupted_run_bit_for_bit(tiny_data, tiny_weights, tmp_path, overrides, request):
    if overrides.get("context"):  # data in documents, so that the context is there
        tiny_data = request.getfixturevalue("tiny_documents")
    whole = train(config(tiny_data, tiny_weights, tmp_path / "whole", **overrides), log=lambda _: None)
    with pytest.raises(Interrupted, match="the state after epoch 1 is saved"):
        train(config(tiny_data, tiny_weights, tmp_path / "cut", **overrides), log=stop_after_epoch(1))
    assert json.loads((tmp_path / "cut" / "resume" / "state.json").read_text())["epoch"] == 1
    resumed = train(resume_config(tmp_path / "cut"), log=lambda _: None, resume=True)
    assert resumed == whole
    for name in ("model.safetensors", "resume/model.safetensors", "resume/optimizer.safetensors"):
        a, b = load_file(tmp_path / "whole" / name), load_file(tmp_path / "cut" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    logs = [[without_timings(json.loads(line)) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
            for run in ("whole", "cut")]
    assert logs[0] == logs[1] and len(logs[0]) == 3
    # The per-step losses are in the records compared above, and drawn the same: more points than epochs.
    curves = [(tmp_path / run / "curves.svg").read_text() for run in ("whole", "cut")]
    steps = ET.fromstring(curves[0]).find(".//{http://www.w3.org/2000/svg}polyline[@class='steps']")
    assert curves[0] == curves[1] and len(steps.get("points").split()) > 3


def test_nothing_to_resume_is_a_clear_error(tiny_data, tiny_weights, tmp_path):
    with pytest.raises(UserError, match="nothing to resume"):
        resume_config(tmp_path)
    train(config(tiny_data, tiny_weights, tmp_path / "done", epochs=1), log=lambda _: None)
    with pytest.raises(UserError, match="already finished"):
        train(resume_config(tmp_path / "done"), log=lambda _: None, resume=True)


def start_training(tiny_data, checkpoint_dir, out, epochs):
    return subprocess.Popen([sys.executable, "train.py", "--data", str(tiny_data), "--weights", str(checkpoint_dir),
                             "--out", str(out), "--epochs", str(epochs), "--patience", "0", "--batch-size", "16"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process, timeout=240):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_sigkill_while_saving_leaves_the_previous_checkpoint_intact(tiny_data, checkpoint_dir, tmp_path):
    out = tmp_path / "run"
    process = start_training(tiny_data, checkpoint_dir, out, epochs=3)
    try:
        wait_for(lambda: (out / "metrics.jsonl").exists(), process)
        snapshot = tmp_path / "snapshot"  # epoch 1's files, hard-linked: saves never modify a file in place
        shutil.copytree(out, snapshot, copy_function=os.link)
        wait_for(lambda: any(tmp_path.glob(".run.tmp-*")), process)  # epoch 2 is being written
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        process.kill()
    assert any(tmp_path.glob(".run.tmp-*")), "the kill should have landed mid-save"
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    for f in snapshot.rglob("*"):
        if f.is_file():
            assert (out / f.relative_to(snapshot)).read_bytes() == f.read_bytes(), f
    texts = ["President Biden visited Wall Street on Monday.", "Alice flew from Paris to Tokyo."]
    after = [p.to_json() for p in load_predictor(out).predictions(texts)]
    assert after == [p.to_json() for p in load_predictor(snapshot).predictions(texts)]
    resumed = subprocess.run([sys.executable, "train.py", "--resume", str(out)], cwd=ROOT, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 1" in resumed.stdout
    assert not any(tmp_path.glob(".run.tmp-*")) and len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_ctrl_c_exits_cleanly_with_a_resumable_state(tiny_data, checkpoint_dir, tmp_path):
    out = tmp_path / "run"
    process = start_training(tiny_data, checkpoint_dir, out, epochs=50)
    try:
        wait_for(lambda: (out / "metrics.jsonl").exists(), process)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("interrupted during epoch")
    assert f"--resume {out}" in stderr
    assert json.loads((out / "resume" / "state.json").read_text())["epoch"] >= 1


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tiny_data, tiny_weights,
                                                                                    tmp_path, monkeypatch):
    import minimtl.machinery.steps as steps  # where a run's training step computes its loss

    real_loss, calls = steps.multitask_loss, []

    def loss_that_explodes_in_epoch_2(*args, **kwargs):
        total, parts = real_loss(*args, **kwargs)
        calls.append(1)
        return (total * float("nan") if len(calls) > 6 else total), parts  # tiny_data: 6 batches per epoch

    monkeypatch.setattr(steps, "multitask_loss", loss_that_explodes_in_epoch_2)
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"the loss became nan at epoch 2, step 6: training stopped; the last good "):
        train(config(tiny_data, tiny_weights, out), log=lambda _: None)
    assert json.loads((out / "resume" / "state.json").read_text())["epoch"] == 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert load_predictor(out).predictions(["Alice went to Paris."])[0].tags is not None
