"""A run's settings: the lesson's (config.TrainConfig) and the data, the run directory and every extension's.

`train.py --help` is generated from these fields (cli.py), a run records them in its checkpoint and resume
state, and `RunConfig.check()` refuses impossible values before anything is loaded or written. The check
never changes a value. What a setting left at None means depends on the kind of run (a frozen backbone,
LoRA, full fine-tuning) and on the model; `recipe()` resolves all of it in one step, into the `Recipe` that
training follows, logs at its start and saves in the checkpoint. Why each default is what it is:
docs/recipes.md.
"""

from dataclasses import dataclass, fields
from pathlib import Path

import torch

from ..config import FREEZING, MODEL, OPTIMISATION, TrainConfig, decay_factor, fraction, non_negative, positive, setting
from ..guards.errors import UserError, read_json
from ..extensions.heads import HEAD_KINDS
from ..extensions.lora import DEFAULT_TARGETS, TARGETS
from ..extensions.precision import native_bf16_cpu
from ..freezing import UnfreezeSchedule, freezes_backbone
from ..model import POOLINGS
from .assemble import HeadConfig
from .download import DEFAULT_NAME
from .threads import usable_cpus

DEMO_DATA = str(Path(__file__).resolve().parent.parent / "demo")
SAMPLINGS = ("proportional", "uniform", "temperature")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "bf16", "fp32")
CACHE_PLACES = ("auto", "disk", "off")
RUN, LORA = "data and run directory", "LoRA"
GROUPS = (RUN, FREEZING, LORA, OPTIMISATION, MODEL)  # the order of train.py --help
MAX_BATCH = 4096  # sentences of a micro-batch: more would fit in no machine's memory with the encoder's gradients
MAX_ACCUM = 1_000_000  # beyond, the loss scale 1 / grad_accum is no longer a number torch can hold
MAX_LEN = 128  # sub-tokens a training sentence keeps by default, where the model numbers that many positions


def known_device(v):
    """must be auto, cpu, cuda or mps"""
    return v in DEVICES


def column_name(v):
    """must name a column of the header"""
    return bool(v.strip())


@dataclass
class RunConfig(TrainConfig):
    """A run's settings: the lesson's (TrainConfig) and the data, the run directory and every extension's. Those
    left at None are resolved by `recipe()`."""

    data: list[str] = setting([DEMO_DATA], "a data folder (train + dev [+ test]) or one file: SNIPS/ATIS folders, "
                              "JSONL, CoNLL columns or CSV; give --data again to train on several sources at once, "
                              "each bringing the task(s) it has (default: the shipped demo set)", RUN)
    weights: str = setting(DEFAULT_NAME, "a checkpoint directory (BERT, RoBERTa, XLM-R, DistilBERT or ELECTRA: "
                           "docs/families.md), or a name under weights/ (the default is fetched on first use); a minimtl run gives "
                           "its encoder and the heads that fit this run's classes and layout", RUN)
    out: str = setting("runs/latest", "run directory: best checkpoint, logs, resumable state; must be new, empty, "
                       "or an earlier run (with --overwrite)", RUN)
    overwrite: bool = setting(False, "replace the earlier minimtl run in --out (never anything else)", RUN)
    keep_resume: bool = setting(False, "keep --out's resume/ (the trained weights and AdamW's two moments of each, "
                                "three times their size) when the run finishes, so that --resume OUT --epochs N "
                                "can train it further; without it a finished run drops it (an interrupted one "
                                "always keeps it)", RUN)
    feature_cache: str = setting("auto", "where the frozen backbone's features are kept: auto = in memory within "
                                 "--cache-memory, else in a temporary file beside --out (removed when the run "
                                 "ends) within half of the free disk space there, else nowhere; disk = in that "
                                 "file; off = nowhere, the frozen encoder runs in every step", RUN,
                                 choices=CACHE_PLACES)
    cache_memory: float | None = setting(None, "GiB of memory that the frozen backbone's feature cache may take "
                                         "(default: half of the memory available when the run starts)", RUN,
                                         positive)
    text_column: str | None = setting(None, "the column of CSV (and tab-separated) data that holds the text, named "
                                      "as in its header row, which any other columns may follow (default: a "
                                      "text,label header or none)", RUN, column_name)
    label_column: str | None = setting(None, "the column of CSV data that holds the label, named as in its header "
                                       "row (default: the column named label, with --text-column)", RUN, column_name)
    label_all_subtokens: bool = setting(False, "label every sub-token of a word (continuations of B-X as I-X), "
                                        "not only the first (extensions/subtokens.py)", RUN)
    quiet: bool = setting(False, "no progress lines within the feature cache, the epochs and the dev and test "
                          "passes (the log's other lines stay)", RUN)
    patience: int = setting(5, "stop after this many epochs without a better dev score (0 = never stop early)",
                            OPTIMISATION, non_negative)
    context: bool = setting(False, "encode each sentence of data that has documents (CoNLL's -DOCSTART-) with as "
                            "many neighbouring words of its document as fit in --max-len, as infer.py reads a "
                            "text of several sentences; only the sentence's own words are labelled and scored",
                            RUN)
    lora: int = setting(0, "train rank-R adapters on a frozen backbone instead of the backbone itself (0 = off); "
                        "checkpoints hold the merged weights", LORA, non_negative)
    lora_alpha: float = setting(16.0, "adapter scale is alpha / R", LORA, positive)
    lora_dropout: float = setting(0.1, "dropout on the adapters' input", LORA, fraction)
    lora_targets: list[str] = setting(list(DEFAULT_TARGETS), "Linears to adapt in every layer", LORA,
                                      choices=tuple(TARGETS))
    lr_lora: float = setting(5e-4, "learning rate of the adapters", LORA, positive)
    max_len: int | None = setting(None, "training sentences are cut to this many sub-tokens, and the cut ones "
                                  f"counted (default: {MAX_LEN}, or the model's position count where it has fewer)",
                                  MODEL, positive)
    epochs: int | None = setting(None, "default: by the kind of run (the recipe logged at the start; "
                                 "docs/recipes.md)", OPTIMISATION, positive)
    lr_backbone: float | None = setting(None, "learning rate of the encoder (of its top layer, with --layer-decay); "
                                        "default: by the recipe (docs/recipes.md)", OPTIMISATION, positive)
    layer_decay: float | None = setting(None, "layer-wise learning-rate decay D: the top encoder layer trains at "
                                        "--lr-backbone, each unit below at D times the one above it; default: by "
                                        "the recipe (1, one rate, unless --crf)", OPTIMISATION, decay_factor)
    sampling: str = setting("proportional", "with several sources, how each training batch's source is drawn: "
                            "proportional to size, uniform, or temperature (size^(1/T))", OPTIMISATION,
                            choices=SAMPLINGS)
    temperature: float = setting(2.0, "T for --sampling temperature", OPTIMISATION, positive)
    device: str = setting("auto", "auto, cpu, cuda or mps", OPTIMISATION, known_device)
    threads: int | None = setting(None, "threads torch computes with (at most the CPUs this process may use); "
                                  "default: measured before the feature cache and each epoch, as the count that "
                                  "computes a few small matrix products fastest (or OMP_NUM_THREADS, when set)",
                                  OPTIMISATION, positive)
    precision: str = setting("auto", "bf16: training steps run their matrix products in bfloat16 (autocast: the "
                             "weights and AdamW stay float32, evaluation is unaffected); fp32: all in float32; "
                             "auto: bf16 on CUDA, and on CPUs with native bf16 dot products (AVX512-BF16 or AMX) "
                             "whenever the encoder runs in the step; fp32 elsewhere", OPTIMISATION, choices=PRECISIONS)
    pooling: str = setting("auto", "how the linear sentence head reads the tokens: cls, mean, or auto = the pooling "
                           "the weights were trained with (their sentence-transformers 1_Pooling/config.json; cls "
                           "without one)", MODEL, choices=("auto", *POOLINGS))
    layers: int | None = setting(None, "the heads read a learned scalar mix of the encoder's top N hidden states "
                                 "(the embeddings count as one). Default: by the recipe (all of them with a frozen "
                                 "backbone, the last otherwise)", MODEL, positive)
    sentence_head: str | None = setting(None, "linear (pooled tokens -> linear), or lstm / conv: a BiLSTM or dilated "
                                        "convolutions whose states' mean and max feed the linear layer. Default: by "
                                        "the recipe", MODEL, choices=HEAD_KINDS)
    token_head: str | None = setting(None, "linear, or lstm / conv: a BiLSTM or dilated convolutions between the "
                                     "hidden states and the tag layer. Default: by the recipe", MODEL,
                                     choices=HEAD_KINDS)
    crf: bool = setting(False, "a CRF over words on the tag layer: trained by its likelihood, decoded by Viterbi",
                        MODEL)
    word_shape: bool | None = setting(None, "give the model each word's case, which an uncased tokenizer erases: a "
                                      "learned vector per word shape (lower, Capitalised, UPPER, mixed, digits, ...), "
                                      "zero at the start, added to the input embeddings of the word's sub-tokens "
                                      "(with --freeze backbone: to what the heads read). Default: by the recipe (on "
                                      "for a frozen backbone whose tokenizer lower-cases training text that has "
                                      "capital letters, off otherwise); --no-word-shape turns it off", MODEL)

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
                raise UserError(f"{flag} {rule.__doc__}, not {value!r}" if isinstance(value, str) else
                                f"{flag} {rule.__doc__}, not {value}")
            for v in value if isinstance(value, list) else [value]:
                if choices is not None and v is not None and v not in choices:
                    raise UserError(f"{flag} must be one of {', '.join(choices)}, not {v!r}")
        if self.batch_size > MAX_BATCH or self.grad_accum > MAX_ACCUM:
            raise UserError(f"--batch-size must be at most {MAX_BATCH} and --grad-accum at most {MAX_ACCUM:,}, not "
                            f"{self.batch_size} and {self.grad_accum}")
        if self.max_len is not None and self.max_len < 3:
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
        if not self.data:
            raise UserError("--data: give at least one data folder or file")
        if self.threads is not None and self.threads > usable_cpus():
            raise UserError(f"--threads must be at most {usable_cpus()}, the CPUs this process may use, not {self.threads}")
        if self.label_all_subtokens and self.crf:
            raise UserError("--label-all-subtokens changes nothing with --crf: the CRF scores each word at its first "
                            "sub-token only")
        if self.lora and self.unfreeze_schedule:
            raise UserError("--lora keeps the whole backbone frozen: it cannot be combined with --unfreeze-schedule")


# --- the recipe: what the settings mean for this model -----------------------------------------------------

# What each kind of run gets where a setting is left out. The numbers were chosen on dev data; what was
# tried and what it gave is in docs/recipes.md.
KIND_DEFAULTS = {  # kind -> (epochs, sentence head, token head, the hidden states the heads read)
    "frozen backbone": (3, "lstm", "lstm", "all"),
    "LoRA": (10, "linear", "linear", "last"),
    "full fine-tuning": (4, "linear", "linear", "last"),
}
CRF_DEFAULTS = {True: (3e-4, 0.8), False: (2e-4, 1.0)}  # with --crf or not: (top-layer learning rate, decay)


@dataclass(frozen=True)
class Recipe:
    """What one run trains with, every default resolved: logged in one block when it starts (`describe`) and
    saved in its checkpoint's config.json."""

    kind: str  # one of KIND_DEFAULTS
    epochs: int
    max_len: int  # the sub-tokens a training sentence keeps (--max-len)
    learning_rates: dict  # unit kind -> peak rate: "backbone" (its top layer's), "heads", "adapters"
    layer_decay: float  # 1 = one backbone rate; D < 1: each backbone unit trains at D times the one above
    heads: HeadConfig
    bf16: bool  # training steps that run the encoder multiply in bfloat16 (autocast)
    bf16_cached: bool  # the same for steps of the heads alone, on a frozen backbone's cached features
    word_shapes: str | None = None  # where the word-shape vectors are added (model.WORD_SHAPES), None: no shapes

    def describe(self):
        h = self.heads
        trains = {"frozen backbone": ("heads",), "LoRA": ("adapters", "heads")}.get(self.kind, ("backbone", "heads"))
        rates = ", ".join(f"{kind} {self.learning_rates[kind]:.0e}" for kind in trains)
        decay = f" (layer-wise decay {self.layer_decay} below the top layer)" if "backbone" in trains \
            and self.layer_decay != 1 else ""
        context = {"conv": "dilated convolutions", "lstm": "a BiLSTM"}
        sentence = f"{context[h.sentence_head]}, then the mean and max of its states" if h.sentence_head in context \
            else f"linear on the {'[CLS] token' if h.pooling == 'cls' else 'mean of the tokens'}"
        token = f"{context[h.token_head]}, then linear" if h.token_head in context else "linear"
        reads = "the last hidden state" if h.layers == 1 else f"a scalar mix of the top {h.layers} hidden states"
        precision = lambda bf16: "bf16 autocast" if bf16 else "float32"
        return "\n".join([
            f"recipe: {self.kind}, {self.epochs} epoch{'s' * (self.epochs != 1)} (docs/recipes.md says why)",
            f"  learning rates: {rates}{decay}",
            f"  the heads read {reads}",
            f"  sentence head: {sentence}; token head: {token}{' + CRF' if h.crf else ''}",
            f"  training steps: {precision(self.bf16)} with the encoder, {precision(self.bf16_cached)} on cached "
            "features",
        ] + ([f"  word shapes: {SHAPES_WHERE[self.word_shapes]}"] if self.word_shapes else []))


SHAPES_WHERE = {
    "embeddings": "a zero-initialised vector per shape, added to the input embeddings (transformers' "
                  "BertModel.from_pretrained(run) loads this encoder without it: docs/operating.md)",
    "heads": "a zero-initialised vector per shape, added to what the heads read (the frozen encoder cannot learn it)",
}


def kind_of_run(cfg):
    """Which of KIND_DEFAULTS `cfg` trains."""
    return "frozen backbone" if freezes_backbone(cfg.freeze) else "LoRA" if cfg.lora else "full fine-tuning"


def planned_epochs(cfg):
    """The epochs `cfg` trains: --epochs, or its kind's default (which needs no model: resume.py asks it)."""
    return cfg.epochs or KIND_DEFAULTS[kind_of_run(cfg)][0]


def recipe(cfg, encoder_config, trained_pooling, n_labels, n_tags, device, erases_case=False):
    """The Recipe `cfg` asks for with this encoder (its config), its pretrained pooling ("cls" or "mean"),
    the data's label and tag counts, on `device`. `erases_case`: the tokenizer lower-cases training text
    that has capital letters. Refuses settings that do not fit the encoder."""
    kind = kind_of_run(cfg)
    _, sentence, token, read = KIND_DEFAULTS[kind]
    all_layers = encoder_config.num_hidden_layers + 1
    if cfg.layers is not None and cfg.layers > all_layers:
        raise UserError(f"--layers {cfg.layers}: the encoder has {all_layers} hidden states "
                        f"(the embeddings and {all_layers - 1} layers)")
    sentence_head = cfg.sentence_head or sentence
    if sentence_head != "linear" and cfg.pooling != "auto":
        raise UserError(f"--pooling {cfg.pooling} is how the linear sentence head reads the tokens; the "
                        f"{sentence_head} sentence head pools its own states (mean and max): add --sentence-head linear")
    heads = HeadConfig(
        n_labels, n_tags,
        pooling=trained_pooling if cfg.pooling == "auto" else cfg.pooling,
        dropout=cfg.dropout,
        layers=cfg.layers or (all_layers if read == "all" else 1),
        sentence_head=sentence_head,
        token_head=cfg.token_head or token,
        crf=cfg.crf,
    )
    # Word shapes enter the encoder where the encoder learns, and the heads where it cannot (wordshape.py). A
    # frozen backbone's heads read them by default wherever the tokenizer erases case the text has: case is the
    # strongest cue English has for a name, and the encoder stays the pretrained one. Fine-tuning adds them to
    # the encoder's embeddings only when asked: a plain BERT (transformers, say) reading the run would lack them.
    shapes = cfg.word_shape if cfg.word_shape is not None else kind == "frozen backbone" and erases_case
    word_shapes = None if not shapes else "heads" if kind == "frozen backbone" else "embeddings"
    if word_shapes == "embeddings" and not cfg.lora and not cfg.unfreeze_schedule and \
            ("embeddings" in cfg.freeze or cfg.freeze_layers):
        raise UserError("--word-shape adds its vectors to the input embeddings, which --freeze embeddings / "
                        "--freeze-layers keep frozen: they would never learn (use --freeze backbone to add them to "
                        "what the heads read)")
    schedule = UnfreezeSchedule(cfg.unfreeze_schedule, all_layers - 1) if cfg.unfreeze_schedule else None
    if word_shapes == "embeddings" and schedule and not cfg.lora and all(
            "embeddings" in schedule.frozen_backbone(e) for e in range(1, planned_epochs(cfg) + 1)):
        raise UserError(f"--word-shape adds its vectors to the input embeddings, which --unfreeze-schedule "
                        f"{cfg.unfreeze_schedule} keeps frozen for all {planned_epochs(cfg)} epochs: they would never "
                        "learn (thaw the embeddings within the run, or use --freeze backbone to add them to what the "
                        "heads read)")
    lr, decay = CRF_DEFAULTS[cfg.crf]
    return Recipe(
        kind, planned_epochs(cfg), cfg.max_len or min(MAX_LEN, encoder_config.max_tokens),
        {"backbone": cfg.lr_backbone or lr, "heads": cfg.lr_heads, "adapters": cfg.lr_lora},
        cfg.layer_decay or decay, heads, bf16_steps(cfg.precision, device, cached=False),
        bf16_steps(cfg.precision, device, cached=True), word_shapes,
    )


def trained_pooling(directory):
    """How the checkpoint was trained to give one sentence vector: "mean" or "cls".

    Sentence-transformers checkpoints (all-MiniLM-L6-v2 among them) say it in 1_Pooling/config.json; their
    [CLS] vector was never trained to summarise the sentence, the mean of the tokens was. Anything else is
    read as BERT pretraining left it: [CLS], the token its next-sentence objective read.
    """
    path = Path(directory) / "1_Pooling" / "config.json"
    if not path.is_file():
        return "cls"
    config = read_json(path)
    if not isinstance(config, dict):
        raise UserError("not a sentence-transformers pooling config (a JSON object)", path)
    return "mean" if config.get("pooling_mode_mean_tokens") else "cls"


def bf16_steps(precision, device, cached):
    """Whether training steps on `device` run under bf16 autocast (--precision). `cached`: the step runs the
    heads alone, on a frozen backbone's cached features."""
    if precision == "auto":
        # On a CPU, bf16 pays for the encoder's large products; heads on cached features (small BiLSTMs and
        # linear layers) gain no time from it, so those steps keep float32's numbers.
        return device.type == "cuda" or device.type == "cpu" and native_bf16_cpu() and not cached
    return precision == "bf16"
