import os

# Runs in these tests compare bit for bit, and a thread count chosen from the machine's load could differ
# between two of them (minimtl/machinery/threads.py): fix it, at torch's own default, for every process.
os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from minimtl.machinery.settings import RunConfig
from minimtl.machinery.download import fetch_default_weights
from minimtl.machinery.interrupts import Interrupted
from minimtl.machinery.run import train

pytest_plugins = ["small_checkpoint"]  # fixtures of the small random checkpoint for the inference tests

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def checkpoint_dir():
    """The default pretrained checkpoint (config.json, model.safetensors, vocab.txt, tokenizer_config.json)."""
    return fetch_default_weights(quiet=True)  # verifies the sha256 sums; downloads only when missing


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory, checkpoint_dir):
    """A randomly initialised 2-layer, 32-wide BERT with the real vocabulary: fast to train in tests."""
    import shutil

    import torch
    from safetensors.torch import save_file

    from minimtl import BertConfig, Bert

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    encoder = Bert(config)
    path = tmp_path_factory.mktemp("tiny-bert")
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(asdict(config)))
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copyfile(checkpoint_dir / name, path / name)
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small joint data folder (train/dev/test JSONL) taken from the shipped demo set."""
    demo = ROOT / "minimtl" / "demo"
    path = tmp_path_factory.mktemp("tiny-data")
    for split, n in (("train", 48), ("dev", 16), ("test", 16)):
        lines = (demo / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        (path / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_documents(tmp_path_factory):
    """The tiny data's sentences and tags as CoNLL columns, in documents of three sentences (-DOCSTART-)."""
    demo = ROOT / "minimtl" / "demo"
    path = tmp_path_factory.mktemp("tiny-documents")
    for split, n in (("train", 48), ("dev", 16), ("test", 16)):
        records = [json.loads(line) for line in (demo / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:n]]
        (path / f"{split}.txt").write_text("".join(
            "-DOCSTART- -X- O\n\n" * (i % 3 == 0) + "".join(f"{w} {t}\n" for w, t in zip(r["tokens"], r["tags"])) + "\n"
            for i, r in enumerate(records)), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def interrupted_run(tmp_path_factory, tiny_data, tiny_weights):
    """A run of 3 epochs stopped (as by Ctrl-C) after its first: resumable. Tests copy it before changing it."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    cfg = RunConfig(data=[str(tiny_data)], weights=str(tiny_weights), out=str(out), epochs=3, batch_size=16,
                      patience=0, device="cpu")

    def stop(line):
        if line.startswith("epoch  1/"):
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        train(cfg, log=stop)
    return out
