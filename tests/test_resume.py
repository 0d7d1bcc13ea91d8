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
    overrides = {**overrides, "keep_resume": True}  # the finished runs' states are compared below
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
    with pytest.raises(UserError, match="this run finished, and its resume/ state was dropped at the end: nothing "
                                        "to resume"):
        train(resume_config(tmp_path / "done"), log=lambda _: None, resume=True)
    train(config(tiny_data, tiny_weights, tmp_path / "kept", epochs=1, keep_resume=True), log=lambda _: None)
    with pytest.raises(UserError, match=r"already finished: nothing to resume \(--epochs N, more than its 1, "):
        train(resume_config(tmp_path / "kept"), log=lambda _: None, resume=True)


def tree_bytes(directory):
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())


def test_a_finished_run_drops_its_resume_state_and_says_how_to_keep_it(tiny_data, tiny_weights, tmp_path):
    lines = []
    train(config(tiny_data, tiny_weights, tmp_path / "run", epochs=1), log=lines.append)
    out = tmp_path / "run"
    assert not (out / "resume").exists() and json.loads((out / "run.json").read_text())["finished"] is True
    # What is left is the checkpoint and its logs: the weights and a few small files. The state held the trained
    # weights again and AdamW's two moments of each, three times the weights.
    assert tree_bytes(out) < 1.5 * (out / "model.safetensors").stat().st_size
    [said] = [line for line in lines if "resume" in line and "--keep-resume" in line]
    assert said.startswith(f"removed {out / 'resume'} (") and f"--resume {out} --epochs N" in said
    assert lines[-1] == said  # the run's last word: after the test scores, the marker and the calibration


def test_keep_resume_keeps_the_state_of_a_finished_run(tiny_data, tiny_weights, tmp_path):
    lines = []
    train(config(tiny_data, tiny_weights, tmp_path / "run", epochs=1, keep_resume=True), log=lines.append)
    out = tmp_path / "run"
    assert json.loads((out / "resume" / "state.json").read_text())["epoch"] == 1
    assert tree_bytes(out / "resume") > 2 * (out / "model.safetensors").stat().st_size
    assert lines[-1].startswith(f"kept {out / 'resume'} (") and f"--resume {out} --epochs N trains" in lines[-1]


@pytest.fixture(scope="module")
def kept_run(tmp_path_factory, tiny_data, tiny_weights):
    """A finished 2-epoch run that kept its resume state (--keep-resume). Tests copy it before changing it."""
    out = tmp_path_factory.mktemp("kept") / "run"
    train(config(tiny_data, tiny_weights, out, epochs=2, keep_resume=True), log=lambda _: None)
    return out


def test_more_epochs_train_a_kept_finished_run_further_and_it_ends_finished_again(kept_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(kept_run, out)
    before = (out / "metrics.jsonl").read_text().splitlines()
    lines = []
    results = train(resume_config(out, epochs=4), log=lines.append, resume=True)
    assert "resuming after epoch 2 of 4" in "\n".join(lines)
    assert any(line.startswith("epoch  3/4") for line in lines) and any(line.startswith("epoch  4/4") for line in lines)
    after = (out / "metrics.jsonl").read_text().splitlines()
    assert after[:2] == before and [json.loads(line)["epoch"] for line in after] == [1, 2, 3, 4]
    # The best epoch is chosen across all four: the first with the highest selection score.
    scores = [json.loads(line)["select"] for line in after]
    assert results["best_epoch"] == scores.index(max(scores)) + 1
    assert json.loads((out / "results.json").read_text())["best_epoch"] == results["best_epoch"]
    assert json.loads((out / "run.json").read_text())["finished"] is True
    state = json.loads((out / "resume" / "state.json").read_text())  # kept again: --keep-resume is the run's
    assert state["epoch"] == 4 and state["config"]["epochs"] == 4 and state["config"]["keep_resume"] is True
    assert lines[-1].startswith(f"kept {out / 'resume'}")


def test_an_extension_interrupted_before_its_first_save_is_an_interrupted_run_of_the_new_total(kept_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(kept_run, out)

    def stop_at_start(line):  # the recipe is logged with the run directory held, before the first step
        if line.startswith("recipe:"):
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match=f"the state after epoch 2 is saved; continue with: python train.py "
                                          f"--resume {out}$"):
        train(resume_config(out, epochs=3), log=stop_at_start, resume=True)
    assert json.loads((out / "run.json").read_text())["finished"] is False
    assert json.loads((out / "resume" / "state.json").read_text())["config"]["epochs"] == 3
    results = train(resume_config(out), log=lambda _: None, resume=True)  # what that message says to run
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3 and results["best_epoch"] in (1, 2, 3)
    assert json.loads((out / "run.json").read_text())["finished"] is True


def test_epochs_that_would_train_nothing_or_change_nothing_are_refused(kept_run, interrupted_run, tmp_path):
    with pytest.raises(UserError, match=r"--epochs 2: this run has trained 2 epochs already; give more"):
        resume_config(kept_run, epochs=2)
    with pytest.raises(UserError, match=r"--epochs 1: this run has trained 1 epoch already"):
        resume_config(interrupted_run, epochs=1)
    with pytest.raises(UserError, match=r"--epochs 3 is the total this run trains to already: drop it"):
        resume_config(interrupted_run, epochs=3)  # a run of 3 epochs, stopped after its first
    with pytest.raises(UserError, match=r"--keep-resume: this run keeps its resume state already"):
        resume_config(kept_run, epochs=3, keep_resume=True)
    # Another total for an interrupted run is its new total; --keep-resume keeps its state at the end.
    cfg = resume_config(interrupted_run, epochs=2, keep_resume=True)
    assert (cfg.epochs, cfg.keep_resume) == (2, True)


def test_an_early_stopped_run_is_not_extended(kept_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(kept_run, out)
    # As a run with --patience 1 leaves it when its second epoch was no better than its first.
    state = json.loads((out / "resume" / "state.json").read_text())
    state["config"].update(patience=1, epochs=5)
    state.update(best_epoch=1, best=state["history"][0]["select"])
    (out / "resume" / "state.json").write_text(json.dumps(state))
    with pytest.raises(UserError, match=r"--epochs 6: this run stopped early \(no better dev score than epoch 1's "
                                        r"for --patience 1\), and would stop again after one more epoch unless"):
        resume_config(out, epochs=6)


def test_a_dropped_state_is_one_line_exit_2_saying_how_to_keep_it(tiny_data, tiny_weights, tmp_path):
    out = tmp_path / "run"
    train(config(tiny_data, tiny_weights, out, epochs=1), log=lambda _: None)
    before = sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file())
    done = subprocess.run([sys.executable, "train.py", "--resume", str(out), "--epochs", "3"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.splitlines() == [f"error: {out}: this run finished, and its resume/ state was dropped at the "
                                        "end: nothing to resume (a run started with --keep-resume keeps it, and "
                                        "--resume DIR --epochs N then trains it further)"]
    assert sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file()) == before


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
