"""Distillation (extensions/distill.py): a student learns its teachers' mean softened distributions."""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from minimtl import UserError
from minimtl.batching import batches
from minimtl.extensions.distill import TEMPERATURE, Teachers, softened_kl
from minimtl.extensions.features import CachedModel, FeatureCache
from minimtl.machinery.checkpoint import load_checkpoint
from minimtl.machinery.interrupts import Interrupted
from minimtl.machinery.resume import resume_config
from minimtl.machinery.run import build, meta, train
from minimtl.machinery.settings import RunConfig
from minimtl.machinery.distributed import Processes
from minimtl.machinery.download import sha256
from minimtl.model import at_words


def config(data, weights, out, **overrides):
    settings = dict(epochs=2, batch_size=8, patience=0, freeze=["backbone"], device="cpu") | overrides
    return RunConfig(data=[str(data)], weights=str(weights), out=str(out), **settings)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory, tiny_data, tiny_weights):
    """Two frozen-backbone runs of the tiny data, seeds 0 and 1."""
    root = tmp_path_factory.mktemp("teachers")
    for seed in (0, 1):
        train(config(tiny_data, tiny_weights, root / f"seed{seed}", seed=seed), log=lambda _: None)
    return [str(root / "seed0"), str(root / "seed1")]


@given(st.lists(st.floats(-30, 30), min_size=2, max_size=6), st.data())
@settings(max_examples=200, deadline=None)
def test_the_distillation_term_is_zero_for_a_student_equal_to_its_teachers_and_positive_otherwise(logits, data):
    z = torch.tensor(logits, dtype=torch.float64)
    other = torch.tensor(data.draw(st.lists(st.floats(-30, 30), min_size=len(logits), max_size=len(logits))),
                         dtype=torch.float64)
    same = F.softmax(z / TEMPERATURE, -1)
    assert softened_kl(z, same).item() == pytest.approx(0, abs=1e-5)
    gap = softened_kl(other, same).item()
    assert gap >= -1e-5  # Gibbs' inequality: KL is never negative
    if not torch.allclose(F.softmax(other / TEMPERATURE, -1), same, atol=1e-3):
        assert gap > 0


def student_parts(tiny_data, tiny_weights, out, teacher_dirs):
    """(student model, its sources, its Teachers, the net on its feature cache, the first training batch)."""
    cfg = config(tiny_data, tiny_weights, out, distill=teacher_dirs)
    model, sources, weights_dir, recipe = build(cfg, log=lambda _: None)
    runs = {d: load_checkpoint(d) for d in teacher_dirs}
    student = Teachers(runs, meta(cfg, recipe, sources, weights_dir, sha256(weights_dir / "model.safetensors"),
                                  None, Processes()))
    cache = FeatureCache(model, sources, ["train"], log=lambda _: None)
    batch = batches(sources[0].ids["train"], 8)[0]
    batch.source, batch.split = sources[0].name, "train"
    return model, student, CachedModel(model, cache), batch, runs


def test_each_sentence_gets_the_teachers_mean_softened_distributions_and_the_teachers_are_asked_once(
        teachers, tiny_data, tiny_weights, tmp_path):
    model, student, net, batch, runs = student_parts(tiny_data, tiny_weights, tmp_path / "s", teachers)
    topics, tags = student.targets(batch, net)
    # What each teacher says with its own encoder (not the cache): the same, to the cache's float16 precision.
    outs = [m(batch) for m, _ in runs.values()]
    expected_topics = torch.stack([F.softmax(o.cls_logits / TEMPERATURE, -1) for o in outs]).mean(0)
    expected_tags = torch.stack([F.softmax(at_words(o.ner_logits, batch.words)[0] / TEMPERATURE, -1)
                                 for o in outs]).mean(0)
    real = batch.words >= 0
    assert torch.allclose(topics, expected_topics, atol=2e-3)
    assert torch.allclose(tags[real], expected_tags[real], atol=2e-3)
    assert (tags[~real] == 0).all() and torch.allclose(tags[real].sum(-1), torch.ones(int(real.sum())))
    for m, _ in runs.values():  # asked again, a teacher would fail: what they said is kept
        m.forward = None
    again = student.targets(batch, net)
    assert torch.equal(again[0], topics) and torch.equal(again[1], tags)


def test_a_student_with_its_teachers_weights_learns_nothing_more_from_them(teachers, tiny_data, tiny_weights, tmp_path):
    model, student, net, batch, runs = student_parts(tiny_data, tiny_weights, tmp_path / "s", teachers[:1])
    model.load_state_dict(next(iter(runs.values()))[0].state_dict())
    model.eval()
    loss = student.loss(net(batch), batch, net)
    assert loss.item() == pytest.approx(0, abs=1e-6)


def test_a_distilled_run_logs_its_distillation_loss_and_resumes_bit_for_bit(teachers, tiny_data, tiny_weights,
                                                                             tmp_path):
    settings = dict(epochs=3, distill=teachers, keep_resume=True, threads=1)
    whole = train(config(tiny_data, tiny_weights, tmp_path / "whole", **settings), log=lambda _: None)

    def stop(line):
        if line.startswith("epoch  1/"):
            raise KeyboardInterrupt
    with pytest.raises(Interrupted):
        train(config(tiny_data, tiny_weights, tmp_path / "cut", **settings), log=stop)
    resumed = train(resume_config(tmp_path / "cut"), log=lambda _: None, resume=True)
    assert resumed == whole
    for name in ("model.safetensors", "resume/optimizer.safetensors"):
        a, b = load_file(tmp_path / "whole" / name), load_file(tmp_path / "cut" / name)
        assert all(torch.equal(a[k], b[k]) for k in a)
    records = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss_distill"] > 0 for r in records)
    # and the teachers changed what it learned: the same run without them ends elsewhere
    train(config(tiny_data, tiny_weights, tmp_path / "plain", epochs=3, threads=1, keep_resume=True),
          log=lambda _: None)
    last = [load_file(tmp_path / run / "resume" / "model.safetensors")["ner_head.out.weight"] for run in ("plain", "whole")]
    assert not torch.equal(*last)


@pytest.mark.parametrize("flags, says", [
    (["--freeze", "backbone", "--crf"], "which a CRF does not give"),
    (["--freeze", "all"], "nothing would learn from the teachers"),
])
def test_a_student_that_does_not_fit_its_teachers_is_one_line_exit_2(teachers, tiny_data, tiny_weights, tmp_path,
                                                                     flags, says):
    p = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data", str(tiny_data), "--weights",
                        str(tiny_weights), "--out", str(tmp_path / "s"), "--epochs", "1", *flags, "--distill",
                        *teachers], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert says in p.stderr and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_teachers_of_other_labels_or_the_runs_own_out_are_refused(teachers, tiny_data, tiny_documents, tiny_weights,
                                                                  tmp_path):
    with pytest.raises(UserError, match="the teacher's labels differ"):
        train(config(tiny_documents, tiny_weights, tmp_path / "s", distill=teachers), log=lambda _: None)
    with pytest.raises(UserError, match="a run cannot teach the run that replaces it"):
        train(config(tiny_data, tiny_weights, teachers[0], distill=teachers, overwrite=True), log=lambda _: None)
