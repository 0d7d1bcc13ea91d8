from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def checkpoint_dir():
    """The default pretrained checkpoint (config.json, model.safetensors, vocab.txt, tokenizer_config.json)."""
    return ROOT / "weights" / "all-MiniLM-L6-v2"
