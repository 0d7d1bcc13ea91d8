"""The lesson's training settings, each declared once: its type, default, meaning and check in one field below.

`train.py --help` is generated from these fields and from the run's own (machinery/settings.py, which adds
the data, the run directory and every extension's settings, and checks them all before a run starts).
"""

from dataclasses import dataclass, field

from .freezing import FREEZE_MODES
from .model import POOLINGS

# A setting's check is a predicate whose docstring is what an error line says of a value it refuses.

def positive(v):
    """must be positive"""
    return v > 0  # also false for NaN


def non_negative(v):
    """must not be negative"""
    return v >= 0


def fraction(v):
    """must be in [0, 1)"""
    return 0 <= v < 1


def decay_factor(v):
    """must be in (0, 1]"""
    return 0 < v <= 1


def seed_range(v):
    """must be in 0..4294967295"""
    return 0 <= v <= 2**32 - 1  # numpy's seeds are 32-bit


FREEZING, OPTIMISATION, MODEL = "freezing", "optimisation", "model"


def setting(default, help, group, check=None, choices=None):
    """A dataclass field carrying what argparse and `check()` need to know about it."""
    meta = {"help": help, "group": group, "check": check, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    max_len: int = setting(128, "training sentences are cut to this many sub-tokens, and the cut ones counted",
                           MODEL, positive)
    freeze: list[str] = setting(["none"], "one or more of: " + ", ".join(FREEZE_MODES) + ". With the whole "
                                "backbone frozen its hidden states are computed once and stored", FREEZING,
                                choices=FREEZE_MODES)
    freeze_layers: int = setting(0, "freeze the embeddings and the bottom N encoder layers", FREEZING, non_negative)
    unfreeze_schedule: str | None = setting(None, "'gradual' (heads only in epoch 1, then one more encoder layer "
                                            "from the top each epoch) or top-layer counts per epoch such as "
                                            "'0,2,4,all'", FREEZING)
    epochs: int = setting(4, "passes over the training data", OPTIMISATION, positive)
    batch_size: int = setting(32, "sentences per micro-batch", OPTIMISATION, positive)
    grad_accum: int = setting(1, "micro-batches per optimizer step", OPTIMISATION, positive)
    lr_backbone: float = setting(2e-4, "learning rate of the encoder (of its top layer, with --layer-decay)",
                                 OPTIMISATION, positive)
    layer_decay: float = setting(1.0, "layer-wise learning-rate decay D: the top encoder layer trains at "
                                 "--lr-backbone, each unit below at D times the one above it", OPTIMISATION,
                                 decay_factor)
    lr_heads: float = setting(1e-2, "learning rate of the freshly initialised heads", OPTIMISATION, positive)
    weight_decay: float = setting(0.01, "AdamW decay, never applied to biases and LayerNorm weights",
                                  OPTIMISATION, non_negative)
    warmup: float = setting(0.1, "fraction of all optimizer steps spent ramping the learning rate up from 0",
                            OPTIMISATION, fraction)
    clip: float = setting(1.0, "gradient-norm clipping (0 = off)", OPTIMISATION, non_negative)
    seed: int = setting(0, "seeds the heads, dropout and the batch order", OPTIMISATION, seed_range)
    w_cls: float = setting(1.0, "weight of the sentence loss", MODEL, non_negative)
    w_ner: float = setting(1.0, "weight of the token loss", MODEL, non_negative)
    pooling: str = setting("cls", "how the sentence head reads the tokens: cls or mean", MODEL, choices=POOLINGS)
    dropout: float = setting(0.1, "dropout in the heads", MODEL, fraction)
