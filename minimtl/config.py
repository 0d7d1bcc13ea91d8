"""The lesson's training settings, each declared once: its type, default, meaning and check in one field below.

`train.py --help` is generated from these fields and from the run's own (machinery/settings.py, which adds
the data, the run directory and every extension's settings). `check()` refuses impossible values before
anything is loaded or written, and never changes a value.
"""

from dataclasses import dataclass, field, fields

from .errors import UserError
from .freezing import FREEZE_MODES
from .model import POOLINGS

MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit
MAX_BATCH = 4096  # sentences of a micro-batch: more would fit in no machine's memory with the encoder's gradients
MAX_ACCUM = 1_000_000  # beyond, the loss scale 1 / grad_accum is no longer a number torch can hold


def positive(v):
    return v > 0  # also false for NaN


def non_negative(v):
    return v >= 0


def fraction(v):
    return 0 <= v < 1


def decay_factor(v):
    return 0 < v <= 1


def seed_range(v):
    return 0 <= v <= MAX_SEED


RULES = {positive: "must be positive", non_negative: "must not be negative", fraction: "must be in [0, 1)",
         decay_factor: "must be in (0, 1]", seed_range: f"must be in 0..{MAX_SEED}"}
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

    def check(self):
        """Refuse impossible settings before anything is loaded or written; changes nothing."""
        for f in fields(self):
            value, rule, choices = getattr(self, f.name), f.metadata["check"], f.metadata["choices"]
            flag = "--" + f.name.replace("_", "-")
            if rule is not None and value is not None and not rule(value):
                says = RULES.get(rule, rule.__doc__)  # a run's own rules say it in their docstring
                raise UserError(f"{flag} {says}, not {value!r}" if isinstance(value, str) else
                                f"{flag} {says}, not {value}")
            if choices is not None and value is not None:
                for v in value if isinstance(value, list) else [value]:
                    if v not in choices:
                        raise UserError(f"{flag} must be one of {', '.join(choices)}, not {v!r}")
        if self.batch_size > MAX_BATCH or self.grad_accum > MAX_ACCUM:
            raise UserError(f"--batch-size must be at most {MAX_BATCH} and --grad-accum at most {MAX_ACCUM:,}, not "
                            f"{self.batch_size} and {self.grad_accum}")
        if self.max_len < 3:
            raise UserError("--max-len must be at least 3 ([CLS], one sub-token, [SEP])")
        if self.w_cls == 0 and self.w_ner == 0:
            raise UserError("--w-cls and --w-ner are both 0: no task would be learned")
        if self.unfreeze_schedule and (set(self.freeze) - {"none", "cls-head", "ner-head"} or self.freeze_layers):
            raise UserError("--unfreeze-schedule decides which backbone layers train: combine it only with "
                            "--freeze cls-head / ner-head")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and value in (float("inf"), float("-inf")):
                raise UserError(f"--{f.name.replace('_', '-')} must be finite, not {value}")
