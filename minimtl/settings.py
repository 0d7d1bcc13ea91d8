"""What a training run is asked to do: every setting, checked before anything is loaded or written.

`TrainConfig` is what `train.py` builds from its flags and what a run records in its checkpoint and
resume state, so an interrupted run can be continued with exactly the same settings.
"""

from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from .errors import UserError
from .lora import DEFAULT_TARGETS
from .model import POOLINGS
from .resume import read_progress
from .weights import DEFAULT_NAME

DEMO_DATA = Path(__file__).resolve().parent / "demo"
SELECT_METRICS = ("mean", "label_accuracy", "entity_f1", "frame_accuracy")


@dataclass
class TrainConfig:
    data: str = str(DEMO_DATA)
    weights: str = DEFAULT_NAME
    out: str = "runs/latest"
    epochs: int | None = None  # None: 4 for full fine-tuning, 10 with LoRA, 30 with a frozen backbone
    # lr_backbone 2e-4 and 4 epochs: chosen on SNIPS dev (README, "How the default recipe was chosen").
    batch_size: int = 32
    grad_accum: int = 1
    lr_backbone: float = 2e-4
    lr_heads: float = 1e-2
    lr_lora: float = 5e-4
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of all optimizer steps spent ramping the learning rate up from 0
    clip: float = 1.0
    seed: int = 0
    freeze: list = field(default_factory=lambda: ["none"])
    freeze_layers: int = 0
    unfreeze_schedule: str | None = None
    lora: int = 0  # LoRA rank; 0 = off
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    lora_targets: list = field(default_factory=lambda: list(DEFAULT_TARGETS))
    w_cls: float = 1.0
    w_ner: float = 1.0
    pooling: str = "cls"
    cls_hidden: int = 0
    dropout: float = 0.1
    max_len: int = 128
    label_all_subtokens: bool = False
    patience: int = 5  # stop after this many epochs without a better dev score; 0 = never stop early
    select: str = "mean"
    device: str = "auto"

    def check(self):
        """Refuse impossible settings before anything is loaded or written."""
        if self.epochs is None:
            # Heads on a frozen backbone are linear probes of fixed features: they converge slowly, and with
            # the feature cache each extra epoch costs milliseconds.
            # LoRA's few adapter weights learn slowly, so it gets more epochs. Full fine-tuning: in 3-epoch runs
            # dev scores were still rising at the end; 4 epochs is what fits in 600 s of SNIPS on 2 cores.
            frozen = {"backbone", "all"} & set(self.freeze)
            self.epochs = 30 if frozen else 10 if self.lora else 4
        for name in ("epochs", "batch_size", "grad_accum", "lr_backbone", "lr_heads", "lr_lora", "max_len"):
            if not getattr(self, name) > 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive, not {getattr(self, name)}")
        for name in ("weight_decay", "clip", "w_cls", "w_ner", "patience", "freeze_layers", "lora"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} must not be negative, not {getattr(self, name)}")
        if self.w_cls == 0 and self.w_ner == 0:
            raise UserError("--w-cls and --w-ner are both 0: no task would be learned")
        if self.lora and self.unfreeze_schedule:
            raise UserError("--lora keeps the whole backbone frozen: it cannot be combined with --unfreeze-schedule")
        if not 0 <= self.warmup < 1 or not 0 <= self.dropout < 1 or not 0 <= self.lora_dropout < 1:
            raise UserError("--warmup, --dropout and --lora-dropout are fractions in [0, 1)")
        if self.pooling not in POOLINGS:
            raise UserError(f"--pooling must be one of {', '.join(POOLINGS)}")
        if self.select not in SELECT_METRICS:
            raise UserError(f"--select must be one of {', '.join(SELECT_METRICS)}")
        if self.max_len < 3:
            raise UserError("--max-len must be at least 3")
        if self.unfreeze_schedule and (set(self.freeze) - {"none", "cls-head", "ner-head"} or self.freeze_layers):
            raise UserError("--unfreeze-schedule decides which backbone layers train: combine it only with "
                            "--freeze cls-head / ner-head")


def resume_config(run_dir):
    """The settings of the interrupted run in `run_dir`: a resumed run must use exactly the same ones."""
    saved = read_progress(run_dir)["config"]
    unknown = set(saved) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise UserError(f"the saved run has settings this version does not know: {', '.join(sorted(unknown))}",
                        run_dir)
    return TrainConfig(**{**saved, "out": str(run_dir)})


def pick_device(name):
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is available here (use --device cpu or auto)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: no Apple GPU is available here (use --device cpu or auto)")
    if name not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device must be auto, cpu, cuda or mps, not {name!r}")
    return torch.device(name)
