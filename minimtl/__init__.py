"""minimtl: one pretrained BERT backbone, two task heads. See README.md for the reading order."""

from importlib import import_module

from .bert import Bert, BertConfig
from .guards.errors import UserError
from .weights import load_encoder
# load and train are the machinery's, which importing the core must not load: imported on first use (PEP 562).
MACHINERY = {"load": (".machinery.checkpoint", "load_predictor"), "train": (".machinery.train_command", "train")}
__all__ = ["Bert", "BertConfig", "UserError", "load_encoder", *MACHINERY]
__dir__ = lambda: [*globals(), *MACHINERY]  # noqa: E731 (so that dir() lists them before their first use too)

def __getattr__(name):
    if name in MACHINERY:
        return getattr(import_module(MACHINERY[name][0], __name__), MACHINERY[name][1])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
