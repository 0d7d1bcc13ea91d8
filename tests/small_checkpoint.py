"""A small random checkpoint with the real vocabulary, and the fixtures that serve it to the inference tests
(test_inference, test_streaming). conftest.py loads this module as a pytest plugin, so a test module names
the fixtures without importing them."""

import pytest
import torch

from minimtl.bert import Bert, BertConfig
from minimtl.machinery.checkpoint import atomic_directory, write_model, load_predictor
from minimtl.machinery.assemble import HeadConfig, build_model

LABELS = ["travel", "food", "music"]
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
MAX_LEN = 32  # small, so that a sentence of a few dozen words already needs several windows


def build(directory, tokenizer_dir, labels=LABELS, tags=TAGS):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64)
    model = build_model(Bert(config), HeadConfig(n_labels=len(labels or []), n_tags=len(tags or [])), tags)
    meta = {"labels": labels, "tags": tags, "max_len": MAX_LEN, "heads": {"pooling": "cls"}}
    with atomic_directory(directory) as tmp:
        write_model(tmp, model, meta, tokenizer_dir)
    return directory


@pytest.fixture(scope="module")
def one_thread():
    # The test model is tiny: extra threads only add synchronisation, which costs 20x on a busy machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small(tmp_path_factory, checkpoint_dir):
    return build(tmp_path_factory.mktemp("ckpt") / "small", checkpoint_dir)


@pytest.fixture(scope="module")
def predictor(small):
    return load_predictor(small)
