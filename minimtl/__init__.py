"""minimtl: one pretrained BERT backbone, two task heads. See README.md for the reading order."""

from .bert import Bert, BertConfig
from .guards.errors import UserError
from .weights import load_encoder

__all__ = ["Bert", "BertConfig", "UserError", "load_encoder"]
