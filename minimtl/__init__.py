"""minimtl: one pretrained BERT backbone, two task heads. See README.md for the reading order."""

from .bert import Bert, BertConfig
from .machinery.errors import UserError

__all__ = ["Bert", "BertConfig", "UserError", "load_encoder"]


def __getattr__(name):
    # Imported lazily so that `python -m minimtl.weights` does not find its own module half-imported.
    if name == "load_encoder":
        from .weights import load_encoder
        return load_encoder
    raise AttributeError(f"module 'minimtl' has no attribute {name!r}")
