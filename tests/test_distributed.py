"""Training under torchrun: 2 processes on the CPU (gloo), each process launched as train.py itself.

What must hold (issue 17): two processes train like one process with the same global batch; only rank 0
writes; the checkpoint is an ordinary one; a killed process stops the other with a clear message, and the
last saved epoch loads and resumes exactly; a different number of processes cannot resume a run.

The processes run tests/ddp_worker.py, which runs train.py unchanged and reports what each process wrote
under the test's folder (Python audit hooks), and can make rank 1 kill itself mid-epoch.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file

from minimtl import UserError
from minimtl.machinery.distributed import shard
from minimtl.machinery.settings import RunConfig
from minimtl.machinery.checkpoint import load_predictor
from minimtl.machinery.resume import resume_config
from minimtl.machinery.run import train

TIMEOUT = 300  # seconds for one torchrun job; each takes ~10 here (3 Python processes importing torch)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1"}


def demo_lines(split, n):
    return (ROOT / "minimtl" / "demo" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:n]


@pytest.fixture(scope="module")
def joint_data(tmp_path_factory):
    """40 training sentences: 5 batches of 8, which 2 processes cannot share evenly (rank 1 gets a filler)."""
    path = tmp_path_factory.mktemp("joint")
    for split, n in (("train", 40), ("dev", 32), ("test", 16)):
        (path / f"{split}.jsonl").write_text("\n".join(demo_lines(split, n)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    """The demo set as two disjoint corpora: entities only (ner/) and topics only (topics/)."""
    root = tmp_path_factory.mktemp("sources")
    for name, keep in (("ner", ("tokens", "tags")), ("topics", ("tokens", "label"))):
        (root / name).mkdir()
        for split, (start, n) in (("train", (0 if name == "ner" else 40, 40)), ("dev", (0, 16)), ("test", (16, 16))):
            records = [json.loads(line) for line in demo_lines(split, 80)[start:start + n]]
            lines = [json.dumps({k: r[k] for k in keep}) for r in records]
            (root / name / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [root / "ner", root / "topics"]


@pytest.fixture(scope="module")
def no_dropout_weights(tiny_weights, tmp_path_factory):
    """tiny_weights with the encoder's dropout off: one process and two then compute the same function."""
    path = tmp_path_factory.mktemp("tiny-no-dropout")
    for f in tiny_weights.iterdir():
        shutil.copyfile(f, path / f.name)
    config = json.loads((path / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (path / "config.json").write_text(json.dumps(config))
    return path


def torchrun(args, watch, kill_at=None):
    """Run train.py ARGS as 2 processes; (completed process, {rank: what it wrote under `watch`})."""
    env = {**ENV, "MINIMTL_WATCH": str(watch)} | ({"MINIMTL_KILL_AT": str(kill_at)} if kill_at else {})
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "tests/ddp_worker.py", "train.py", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    writes = {int(m[1]): json.loads(m[2]) for m in re.finditer(r"^WRITES rank=(\d+) (.*)$", done.stderr, re.M)}
    return done, writes


def history(out):
    timings = ("seconds", "train_seconds", "sentences_per_second")
    return [{k: v for k, v in json.loads(line).items() if k not in timings}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("accum", [1, 2, 3])
def test_each_step_of_the_shards_takes_the_micro_batches_one_process_would(world, accum):
    for n in range(1, 15):
        epoch = [("source", f"batch {i}") for i in range(n)]
        shards = [shard(epoch, rank, world) for rank in range(world)]
        assert len({len(shard) for shard in shards}) == 1  # every process joins every step
        real = [[batch for _, batch, counts in shard if counts] for shard in shards]
        assert sorted(sum(real, []), key=lambda b: int(b.split()[1])) == [b for _, b in epoch]
        assert sum(not counts for shard in shards for _, _, counts in shard) == len(shards[0]) * world - n
        one_process = [epoch[i : i + world * accum] for i in range(0, n, world * accum)]
        steps = range(0, len(shards[0]), accum)
        assert [sorted((b for r in real for b in r[s : s + accum]), key=lambda b: int(b.split()[1]))
                for s in steps] == [[b for _, b in step] for step in one_process]
    assert shard(epoch) == [(s, b, True) for s, b in epoch]  # a plain run: all of them, in order


def test_two_processes_train_like_one_with_the_same_global_batch(joint_data, no_dropout_weights, tmp_path):
    # Global batch 8 x 2 processes x 3 micro-batches = 48 >= 40 sentences: every epoch is exactly one optimizer
    # step, so epoch 2's mean training loss is the loss after the first step (dropout off: no noise in it).
    # float32: the processes and the single run split their matrix products across threads differently, and
    # under bf16 autocast such a difference can flip an output's last bf16 bit, far above the tolerances.
    settings = dict(data=[str(joint_data)], weights=str(no_dropout_weights), epochs=6, batch_size=8,
                    lr_backbone=3e-3, lr_heads=5e-2, dropout=0.0, patience=0, device="cpu", precision="fp32",
                    keep_resume=True)  # the resume states are compared below
    args = ["--data", joint_data, "--weights", no_dropout_weights, "--out", tmp_path / "ddp", "--epochs", 6,
            "--batch-size", 8, "--grad-accum", 3, "--lr-backbone", 3e-3, "--lr-heads", 5e-2, "--dropout", 0,
            "--patience", 0, "--device", "cpu", "--precision", "fp32", "--keep-resume"]
    done, writes = torchrun(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "global batch: 8 sentences x 2 processes x 3 accumulated = 48 per optimizer step" in done.stdout
    assert done.stdout.count("epoch  1/6") == 1  # only rank 0 prints
    assert writes[1] == [] and writes[0], writes  # rank 0's writes show that the watching works

    one = train(RunConfig(**settings, out=str(tmp_path / "one"), grad_accum=6), log=lambda _: None)
    ddp, single = history(tmp_path / "ddp"), history(tmp_path / "one")
    assert len(ddp) == len(single) == 6
    assert ddp[0]["loss"] == pytest.approx(single[0]["loss"], abs=1e-6)  # before any step
    assert ddp[1]["loss"] == pytest.approx(single[1]["loss"], abs=1e-5)  # after the first step
    assert [r["loss"] for r in ddp] == pytest.approx([r["loss"] for r in single], abs=1e-4)
    assert single[-1]["loss"] < single[0]["loss"] - 0.5  # it did learn something to compare
    # Both runs compute the same sums in different orders (gradients averaged across processes instead of
    # accumulated in one), so the weights differ by float rounding only; a dev prediction could flip only at a
    # near-tie of two logits, which would move a score by one sentence (1/32) or one entity at most.
    for a, b in zip(ddp, single):
        for metric in a["dev"]:
            assert a["dev"][metric] == pytest.approx(b["dev"][metric], abs=1 / 16), (a["epoch"], metric)
    ours = load_file(tmp_path / "ddp" / "resume" / "model.safetensors")
    theirs = load_file(tmp_path / "one" / "resume" / "model.safetensors")
    # The attention key biases are the exception: softmax ignores a shift shared by a whole row of scores, so
    # their gradient is zero in exact arithmetic, and AdamW turns its rounding noise (~1e-10) into steps.
    ordinary = [k for k in ours if not k.endswith("attention.self.key.bias")]
    assert ours.keys() == theirs.keys() and max((ours[k] - theirs[k]).abs().max() for k in ordinary) < 1e-5

    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert results["dev"] == pytest.approx(one["dev"], abs=1 / 16) and results["test"] is not None
    meta = json.loads((tmp_path / "ddp" / "config.json").read_text())["minimtl"]
    assert (meta["world_size"], meta["global_batch"]) == (2, 48)
    assert json.loads((tmp_path / "ddp" / "resume" / "state.json").read_text())["world_size"] == 2
    predicted = subprocess.run([sys.executable, "infer.py", "--checkpoint", str(tmp_path / "ddp"), "--json",
                                "Alice went to Paris last summer."], cwd=ROOT, env=ENV, capture_output=True,
                               text=True, timeout=TIMEOUT)
    assert predicted.returncode == 0, predicted.stderr
    prediction = json.loads(predicted.stdout)
    assert prediction["text"] == "Alice went to Paris last summer." and {"label", "entities"} <= prediction.keys()


def test_a_killed_process_stops_the_other_and_the_run_resumes_exactly(two_sources, tiny_weights, tmp_path):
    # Frozen backbone (feature cache, DDP around the heads only) on two corpora, each batch teaching one head;
    # dropout is on, so the resumed run can only match if each process's random stream is restored too.
    args = ["--data", two_sources[0], "--data", two_sources[1], "--weights", tiny_weights, "--freeze", "backbone",
            "--epochs", 3, "--batch-size", 8, "--patience", 0, "--device", "cpu", "--keep-resume"]
    whole, writes = torchrun([*args, "--out", tmp_path / "whole"], tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert whole.stdout.count("feature cache: backbone frozen") == 1 and writes[1] == []
    encoder = load_file(tiny_weights / "model.safetensors")
    trained = load_file(tmp_path / "whole" / "model.safetensors")
    assert all(torch.equal(trained["bert." + k], v) for k, v in encoder.items())

    # 10 micro-batches per epoch, 5 for each process: rank 1 dies at its 3rd of epoch 2, after that epoch's
    # first gradient exchange, so rank 0 has finished saving epoch 1.
    cut = tmp_path / "cut"
    killed, writes = torchrun([*args, "--out", cut], tmp_path, kill_at=8)
    assert killed.returncode != 0
    assert 0 in writes and 1 not in writes, killed.stderr[-3000:]  # rank 0 ended its own way; rank 1 was killed
    message = [line for line in killed.stderr.splitlines() if "the state after epoch 1 is saved" in line]
    assert len(message) == 1 and not message[0].startswith("rank"), killed.stderr[-3000:]
    assert message[0].endswith(f"continue with: torchrun --nproc_per_node 2 train.py --resume {cut}")
    assert json.loads((cut / "resume" / "state.json").read_text())["epoch"] == 1
    assert load_predictor(cut).predictions(["Alice went to Paris."])[0].tags is not None

    with pytest.raises(UserError, match=r"trained in 2 process\(es\), not 1: .* torchrun --nproc_per_node 2"):
        train(resume_config(cut), log=lambda _: None, resume=True)  # this one process is not the job it was
    resumed, writes = torchrun(["--resume", cut], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after epoch 1" in resumed.stdout and writes[1] == []
    assert history(cut) == history(tmp_path / "whole")
    for name in ("model.safetensors", "resume/model.safetensors", "resume/optimizer.safetensors"):
        a, b = load_file(tmp_path / "whole" / name), load_file(cut / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_torchrun_on_a_device_without_a_backend_is_a_clear_error(monkeypatch):
    from minimtl.machinery.distributed import joined

    for key, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UserError, match="--device mps: torchrun needs CUDA GPUs"):
        with joined(torch.device("mps")):
            pass
