"""Every training setting, declared once: its type, default, meaning and check live in one field below.

`train.py --help` is generated from these fields (machinery/cli.py), a run records them in its checkpoint
and resume state, and `TrainConfig.check()` refuses impossible values before anything is loaded or written.
The check never changes a value: what a setting means when left at None is a property (`n_epochs`).
"""

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from .freezing import FREEZE_MODES
from .lora import DEFAULT_TARGETS, TARGETS
from .errors import UserError
from .model import HEAD_KINDS, POOLINGS, HeadConfig
from .weights import DEFAULT_NAME

DEMO_DATA = str(Path(__file__).resolve().parent / "demo")
SAMPLINGS = ("proportional", "uniform", "temperature")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "bf16", "fp32")
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit


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


def known_device(v):
    return v in DEVICES


RULES = {positive: "must be positive", non_negative: "must not be negative", fraction: "must be in [0, 1)",
         decay_factor: "must be in (0, 1]",
         seed_range: f"must be in 0..{MAX_SEED}", known_device: "must be " + ", ".join(DEVICES)}


def setting(default, help, group, check=None, choices=None):
    """A dataclass field carrying what argparse and `check()` need to know about it."""
    meta = {"help": help, "group": group, "check": check, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def native_bf16_cpu():
    """Whether this CPU multiplies bf16 matrices in hardware. Without it, bf16 is emulated and slower than fp32;
    with it (AVX512-BF16 or AMX), a bf16 product costs a fraction of an fp32 one, and a fine-tuning step is
    mostly products."""
    capabilities = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


RUN, FREEZING, LORA, OPTIMISATION, MODEL = "data and run directory", "freezing", "LoRA", "optimisation", "model"


@dataclass
class TrainConfig:
    data: list[str] = setting([DEMO_DATA], "a data folder (train + dev [+ test]) or one file: SNIPS/ATIS folders, "
                              "JSONL, CoNLL columns or CSV; give --data again to train on several sources at once, "
                              "each bringing the task(s) it has (default: the shipped demo set)", RUN)
    weights: str = setting(DEFAULT_NAME, "a checkpoint directory (BERT, RoBERTa, XLM-R, DistilBERT or ELECTRA: "
                           "docs/families.md), or a name under weights/ (the default is fetched on first use)", RUN)
    out: str = setting("runs/latest", "run directory: best checkpoint, logs, resumable state; must be new, empty, "
                       "or an earlier run (with --overwrite)", RUN)
    overwrite: bool = setting(False, "replace the earlier minimtl run in --out (never anything else)", RUN)
    max_len: int = setting(128, "training sentences are cut to this many sub-tokens, and the cut ones counted",
                           RUN, positive)
    label_all_subtokens: bool = setting(False, "label every sub-token of a word (continuations of B-X as I-X), "
                                        "not only the first", RUN)

    freeze: list[str] = setting(["none"], "one or more of: " + ", ".join(FREEZE_MODES) + ". With the whole "
                                "backbone frozen its hidden states are computed once and cached", FREEZING,
                                choices=FREEZE_MODES)
    freeze_layers: int = setting(0, "freeze the embeddings and the bottom N encoder layers", FREEZING, non_negative)
    unfreeze_schedule: str | None = setting(None, "'gradual' (heads only in epoch 1, then one more encoder layer "
                                            "from the top each epoch) or top-layer counts per epoch such as "
                                            "'0,2,4,all'", FREEZING)

    lora: int = setting(0, "train rank-R adapters on a frozen backbone instead of the backbone itself (0 = off); "
                        "checkpoints hold the merged weights", LORA, non_negative)
    lora_alpha: float = setting(16.0, "adapter scale is alpha / R", LORA, positive)
    lora_dropout: float = setting(0.1, "dropout on the adapters' input", LORA, fraction)
    lora_targets: list[str] = setting(list(DEFAULT_TARGETS), "Linears to adapt in every layer", LORA,
                                      choices=tuple(TARGETS))
    lr_lora: float = setting(5e-4, "learning rate of the adapters", LORA, positive)

    epochs: int | None = setting(None, "default: 4 for full fine-tuning, 10 with --lora, 5 with a frozen "
                                 "backbone (see TrainConfig.n_epochs)", OPTIMISATION, positive)
    batch_size: int = setting(32, "sentences per micro-batch", OPTIMISATION, positive)
    grad_accum: int = setting(1, "micro-batches per optimizer step", OPTIMISATION, positive)
    lr_backbone: float | None = setting(None, "learning rate of the encoder (of its top layer, with --layer-decay); "
                                        "default 2e-4, or 3e-4 with --crf (chosen on SNIPS dev: docs/benchmarks.md)",
                                        OPTIMISATION, positive)
    layer_decay: float | None = setting(None, "layer-wise learning-rate decay D: the top encoder layer trains at "
                                        "--lr-backbone, each unit below at D times the one above it; default 1 "
                                        "(one rate), or 0.8 with --crf", OPTIMISATION, decay_factor)
    lr_heads: float = setting(1e-2, "learning rate of the freshly initialised heads", OPTIMISATION, positive)
    weight_decay: float = setting(0.01, "AdamW decay, never applied to biases and LayerNorm weights",
                                  OPTIMISATION, non_negative)
    warmup: float = setting(0.1, "fraction of all optimizer steps spent ramping the learning rate up from 0",
                            OPTIMISATION, fraction)
    clip: float = setting(1.0, "gradient-norm clipping (0 = off)", OPTIMISATION, non_negative)
    seed: int = setting(0, "seeds the heads, dropout and the batch order", OPTIMISATION, seed_range)
    patience: int = setting(5, "stop after this many epochs without a better dev score (0 = never stop early)",
                            OPTIMISATION, non_negative)
    sampling: str = setting("proportional", "with several sources, how each training batch's source is drawn: "
                            "proportional to size, uniform, or temperature (size^(1/T))", OPTIMISATION,
                            choices=SAMPLINGS)
    temperature: float = setting(2.0, "T for --sampling temperature", OPTIMISATION, positive)
    device: str = setting("auto", "auto, cpu, cuda or mps", OPTIMISATION, known_device)
    precision: str = setting("auto", "bf16: training steps run their matrix products in bfloat16 (autocast: the "
                             "weights and AdamW stay float32, evaluation is unaffected); fp32: all in float32; "
                             "auto: bf16 on CUDA, and on CPUs with native bf16 dot products (AVX512-BF16 or AMX) "
                             "whenever the encoder runs in the step; fp32 elsewhere", OPTIMISATION, choices=PRECISIONS)

    w_cls: float = setting(1.0, "weight of the sentence loss", MODEL, non_negative)
    w_ner: float = setting(1.0, "weight of the token loss", MODEL, non_negative)
    pooling: str = setting("auto", "how the linear sentence head reads the tokens: cls, mean, or auto = the pooling "
                           "the weights were trained with (their sentence-transformers 1_Pooling/config.json; cls "
                           "without one)", MODEL, choices=("auto", *POOLINGS))
    dropout: float = setting(0.1, "dropout in the heads", MODEL, fraction)
    layers: int | None = setting(None, "the heads read a learned scalar mix of the encoder's top N hidden states "
                                 "(the embeddings count as one). Default: all of them with a frozen backbone, "
                                 "1 (the last) otherwise", MODEL, positive)
    sentence_head: str | None = setting(None, "linear (pooled tokens -> linear), or lstm: a BiLSTM whose states' mean "
                                        "and max feed the linear layer. Default: lstm with a frozen backbone, linear "
                                        "otherwise", MODEL, choices=HEAD_KINDS)
    token_head: str | None = setting(None, "linear, or lstm: a BiLSTM between the hidden states and the tag layer. "
                                     "Default: lstm with a frozen backbone, linear otherwise", MODEL,
                                     choices=HEAD_KINDS)
    crf: bool = setting(False, "a CRF over words on the tag layer: trained by its likelihood, decoded by Viterbi",
                        MODEL)

    @property
    def frozen_backbone(self):
        return bool({"backbone", "all"} & set(self.freeze))

    @property
    def n_epochs(self):
        if self.epochs is not None:
            return self.epochs
        # Heads on a frozen backbone: 5, what fits the frozen recipe's time budget on SNIPS (an epoch of its two
        # BiLSTMs costs about two thirds of an encoder pass); 8 scored higher on dev but runs past it (README).
        # LoRA's few adapter weights learn slowly: 10. Full fine-tuning: 4. On SNIPS, 6 epochs (which bf16
        # products fit in the time of 4 float32 ones) never raised dev and test together: without the CRF dev
        # rose and test fell, with it the other way round (README, the CRF section).
        return 5 if self.frozen_backbone else 10 if self.lora else 4

    @property
    def backbone_lr(self):
        return self.lr_backbone if self.lr_backbone is not None else 3e-4 if self.crf else 2e-4

    @property
    def backbone_decay(self):
        # On SNIPS dev (docs/benchmarks.md) layer-wise decay helped the CRF, whose sentence-level likelihood
        # dominates the shared encoder's gradient, and did not help the per-word cross-entropy; over three
        # seeds on test too, so each gets its own default.
        return self.layer_decay if self.layer_decay is not None else 0.8 if self.crf else 1.0

    def heads(self, n_labels, n_tags, encoder_config, trained_pooling):
        """The HeadConfig these settings ask for, the defaults resolved for this encoder.

        A frozen backbone gets what makes frozen features work (model.py): a scalar mix of every layer and
        a BiLSTM in each head. A fine-tuned one reads its last layer through linear heads: it can move that
        layer towards the task itself.
        """
        all_layers = encoder_config.num_hidden_layers + 1
        if self.layers is not None and self.layers > all_layers:
            raise UserError(f"--layers {self.layers}: the encoder has {all_layers} hidden states "
                            f"(the embeddings and {all_layers - 1} layers)")
        default_head = "lstm" if self.frozen_backbone else "linear"
        sentence_head = self.sentence_head or default_head
        if sentence_head == "lstm" and self.pooling != "auto":
            raise UserError(f"--pooling {self.pooling} is how the linear sentence head reads the tokens; the BiLSTM "
                            "sentence head pools its own states (mean and max): add --sentence-head linear")
        return HeadConfig(
            n_labels, n_tags,
            pooling=trained_pooling if self.pooling == "auto" else self.pooling,
            dropout=self.dropout,
            layers=self.layers or (all_layers if self.frozen_backbone else 1),
            sentence_head=sentence_head,
            token_head=self.token_head or default_head,
            crf=self.crf,
        )

    def training_bf16(self, device, cached=False):
        """Whether a training step on `device` runs under bf16 autocast (--precision). `cached`: the step runs
        the heads alone, on a frozen backbone's cached features."""
        if self.precision == "auto":
            # On a CPU, bf16 pays for the encoder's large products; heads on cached features (small BiLSTMs and
            # linear layers) gain no time from it, so those steps keep float32's numbers.
            return device.type == "cuda" or device.type == "cpu" and native_bf16_cpu() and not cached
        return self.precision == "bf16"

    def torch_device(self):
        if self.device == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda")
            return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
        available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
        if not available[self.device]:
            raise UserError(f"--device {self.device}: no {'CUDA' if self.device == 'cuda' else 'Apple'} GPU is "
                            "available here (use --device cpu or auto)")
        return torch.device(self.device)

    def check(self):
        """Refuse impossible settings before anything is loaded or written; changes nothing."""
        for f in fields(self):
            value, rule, choices = getattr(self, f.name), f.metadata["check"], f.metadata["choices"]
            flag = "--" + f.name.replace("_", "-")
            if rule is not None and value is not None and not rule(value):
                raise UserError(f"{flag} {RULES[rule]}, not {value!r}" if isinstance(value, str) else
                                f"{flag} {RULES[rule]}, not {value}")
            if choices is not None and value is not None:
                for v in value if isinstance(value, list) else [value]:
                    if v not in choices:
                        raise UserError(f"{flag} must be one of {', '.join(choices)}, not {v!r}")
        if not self.data:
            raise UserError("--data: give at least one data folder or file")
        if self.max_len < 3:
            raise UserError("--max-len must be at least 3 ([CLS], one sub-token, [SEP])")
        if self.w_cls == 0 and self.w_ner == 0:
            raise UserError("--w-cls and --w-ner are both 0: no task would be learned")
        if self.lora and self.unfreeze_schedule:
            raise UserError("--lora keeps the whole backbone frozen: it cannot be combined with --unfreeze-schedule")
        if self.unfreeze_schedule and (set(self.freeze) - {"none", "cls-head", "ner-head"} or self.freeze_layers):
            raise UserError("--unfreeze-schedule decides which backbone layers train: combine it only with "
                            "--freeze cls-head / ner-head")
        for name in ("lr_backbone", "lr_heads", "lr_lora", "lora_alpha", "temperature", "w_cls", "w_ner", "clip",
                     "weight_decay"):
            if getattr(self, name) is not None and math.isinf(getattr(self, name)):
                raise UserError(f"--{name.replace('_', '-')} must be finite, not {getattr(self, name)}")
