from pathlib import Path

import pytest

from minimtl.weights import fetch_default_weights

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def checkpoint_dir():
    """The default pretrained checkpoint (config.json, model.safetensors, vocab.txt, tokenizer_config.json)."""
    return fetch_default_weights(quiet=True)  # verifies the sha256 sums; downloads only when missing
