"""The checkpoint families that are BERT under other names: one table of what each one calls things.

A checkpoint's `config.json` says its family in `model_type`. Every family listed here runs through the one
`bert.Bert`; what differs is written down once, below, and nowhere else:

    family       tensor names                                 config.json                  real differences
    bert         bert.encoder.layer.0.attention.self.query    BERT's keys                  -
    roberta      roberta.encoder.layer.0...                   BERT's keys                  positions from pad + 1
    xlm-roberta  roberta.encoder.layer.0...                   BERT's keys                  positions from pad + 1
    electra      electra.encoder.layer.0..., embeddings_project  + embedding_size          projection E -> H
    distilbert   distilbert.transformer.layer.0.attention.q_lin  dim, n_layers, n_heads,   no token types,
                 ...sa_layer_norm, ffn.lin1, output_layer_norm   hidden_dim, dropout, ...  maybe fixed sinusoids

It attaches at three points: a config (`FamilyConfig`, BertConfig with the family's fields and its tensor
names), the encoder's embeddings (`FamilyEmbeddings`, handed to `Bert`), and the reading of a checkpoint
(`load_encoder`: weights.load_encoder with this config and encoder). Names go both ways: `encoder_name`
reads a published file, `published_name` writes a trained run that the family's own `transformers` class
loads (`RobertaModel.from_pretrained(run)`). Anything else, another model_type or another
`position_embedding_type`, is refused here, in one line, before anything is built. (The tokenizers are
family_tokenizers.py's business.)
"""

import math
import re
from dataclasses import asdict, dataclass, field, fields

import torch.nn as nn

from .. import weights
from ..bert import Bert, BertConfig, encoder_tensor
from ..guards.errors import UserError


@dataclass(frozen=True)
class Family:
    prefix: str  # of the encoder's tensors in a file saved from a task model (RobertaForMaskedLM, ...)
    layers: str = "encoder.layer"  # where the blocks are
    renames: dict = field(default_factory=dict)  # published module path -> ours, inside a block or outside
    keys: dict = field(default_factory=dict)  # config.json key -> BertConfig field, where they differ
    defaults: dict = field(default_factory=dict)  # the family's defaults where they differ from BERT's

    def file_key(self, name):
        """The family's config.json key for the BertConfig field `name` (the field's own name where they agree)."""
        return next((key for key, ours in self.keys.items() if ours == name), name)


DISTILBERT_BLOCK = {
    "attention.q_lin": "attention.self.query",
    "attention.k_lin": "attention.self.key",
    "attention.v_lin": "attention.self.value",
    "attention.out_lin": "attention.output.dense",
    "sa_layer_norm": "attention.output.LayerNorm",  # post-LN after attention, as BERT's
    "ffn.lin1": "intermediate.dense",
    "ffn.lin2": "output.dense",
    "output_layer_norm": "output.LayerNorm",
}

FAMILIES = {
    "bert": Family("bert."),
    "roberta": Family("roberta.", defaults={"pad_token_id": 1}),
    "xlm-roberta": Family("roberta.", defaults={"pad_token_id": 1}),
    "electra": Family("electra.", renames={"embeddings_project": "embeddings.project"},
                      defaults={"embedding_size": 128}),
    "distilbert": Family(
        "distilbert.", layers="transformer.layer", renames=DISTILBERT_BLOCK,
        keys={"dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
              "hidden_dim": "intermediate_size", "dropout": "hidden_dropout_prob",
              "attention_dropout": "attention_probs_dropout_prob", "activation": "hidden_act"},
        defaults={"num_hidden_layers": 6, "type_vocab_size": 0}),
}
# Fields only one family's config.json carries; for the others they are None / False.
OWN_FIELDS = {"embedding_size": "electra", "sinusoidal_pos_embds": "distilbert"}
# DistilBERT's config has neither: it has no token-type table, and its LayerNorms hard-code 1e-12.
IMPLIED = {"distilbert": ("type_vocab_size", "layer_norm_eps")}


def not_in_config(model_type):
    """The BertConfig fields that a `model_type` config.json does not carry."""
    return {f for f, owner in OWN_FIELDS.items() if owner != model_type} | set(IMPLIED.get(model_type, ()))


@dataclass
class FamilyConfig(BertConfig):
    """BertConfig with what the other families add; its field names are BERT's (`read_config` translates)."""

    model_type: str = "bert"  # the family: its tensor names, and where positions start
    pad_token_id: int = 0
    embedding_size: int | None = None  # ELECTRA: narrower embeddings, projected up to hidden_size
    sinusoidal_pos_embds: bool = False  # DistilBERT: a fixed sinusoid position table, not a learned one

    def __post_init__(self):
        """Every value a config.json may hold, checked: an impossible one would build a model that cannot run."""
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "layer_norm_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        if not math.isfinite(self.layer_norm_eps):  # 1e-12 in BERT; Infinity would erase every LayerNorm's input
            raise ValueError(f"layer_norm_eps must be finite, not {self.layer_norm_eps}")
        if self.type_vocab_size < 0:
            raise ValueError(f"type_vocab_size must not be negative, not {self.type_vocab_size}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), not {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act != "gelu":
            # "gelu" in BERT configs means the exact erf form; the tanh approximations are other models.
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported (only 'gelu')")
        if self.pad_token_id < 0:
            raise ValueError(f"pad_token_id must not be negative, not {self.pad_token_id}")
        if self.embedding_size is not None and self.embedding_size <= 0:
            raise ValueError(f"embedding_size must be positive, not {self.embedding_size}")
        if self.max_tokens < 1:
            raise ValueError(f"max_position_embeddings {self.max_position_embeddings} leaves no position after "
                             f"the first {self.position_offset}")

    @property
    def position_offset(self):
        """The first position row a sentence uses. RoBERTa and XLM-R (fairseq) number positions from
        pad_token_id + 1, the rows below being reserved for padding; BERT's first token uses row 0."""
        return self.pad_token_id + 1 if self.model_type in ("roberta", "xlm-roberta") else 0

    @property
    def max_tokens(self):
        return self.max_position_embeddings - self.position_offset

    @property
    def embedding_width(self):
        return self.embedding_size or self.hidden_size

    def encoder_name(self, name):
        """A published tensor name as `Bert` calls it, or None for tensors the encoder does not use (task heads,
        the pooler, buffers, and anything under another family's prefix)."""
        fam = FAMILIES[self.model_type]
        module, _, param = name.removeprefix(fam.prefix).rpartition(".")
        if module.startswith(fam.layers + "."):
            index, _, inside = module[len(fam.layers) + 1:].partition(".")
            module = f"encoder.layer.{index}.{fam.renames.get(inside, inside)}"
        else:
            module = fam.renames.get(module, module)
        return encoder_tensor(f"{module}.{param}")


class FamilyEmbeddings(nn.Module):
    """BERT's embeddings with each family's differences: where positions start, no token-type table
    (DistilBERT), fixed sinusoid positions (DistilBERT, optionally), a projection up from narrower embeddings
    (ELECTRA). (B, T) ids -> (B, T, H)."""

    def __init__(self, cfg: FamilyConfig):
        super().__init__()
        E = cfg.embedding_width
        self.position_offset = cfg.position_offset
        self.fixed_positions = cfg.sinusoidal_pos_embds
        self.word_embeddings = nn.Embedding(cfg.vocab_size, E)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, E)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, E) if cfg.type_vocab_size else None
        self.LayerNorm = nn.LayerNorm(E, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        # ELECTRA's generator and discriminator share embeddings sized for the small generator; the
        # discriminator projects them up to its own width.
        self.project = nn.Linear(E, cfg.hidden_size) if E != cfg.hidden_size else None

    def forward(self, input_ids, added=None):
        T, first = input_ids.shape[1], self.position_offset
        if first + T > self.position_embeddings.num_embeddings:
            raise ValueError(f"sequence of {T} tokens is longer than the "
                             f"{self.position_embeddings.num_embeddings - first} positions this model was trained with")
        # Batches are padded on the right, so a row's real tokens are always its first ones and take
        # positions first, first + 1, ... (RoBERTa's cumulative count of non-padding tokens, plus its offset).
        positions = self.position_embeddings.weight[first : first + T]  # (T, E)
        if self.fixed_positions:
            positions = positions.detach()  # no gradient, so AdamW never moves (nor decays) the sinusoids
        x = self.word_embeddings(input_ids) + positions  # (B, T, E)
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings.weight[0]  # every token in segment 0, as in bert.Embeddings
        if added is not None:
            x = x + added
        x = self.dropout(self.LayerNorm(x))
        return x if self.project is None else self.project(x)  # (B, T, H)


def as_family(config):
    """`config` as a FamilyConfig: a plain BertConfig is the "bert" family's."""
    return config if isinstance(config, FamilyConfig) else FamilyConfig(**asdict(config))


def encoder(config):
    """A Bert for `config` (a FamilyConfig): BERT's own embeddings for BERT, the family's for the others."""
    return Bert(config, None if config.model_type == "bert" else FamilyEmbeddings(config))


def published_name(name, model_type):
    """The inverse of `our_name`: the name the family's own `transformers` class looks for, prefix included."""
    fam = FAMILIES[model_type]
    back = {ours: theirs for theirs, ours in fam.renames.items()}
    module, _, param = name.rpartition(".")
    if module.startswith("encoder.layer."):
        index, _, inside = module[len("encoder.layer."):].partition(".")
        module = f"{fam.layers}.{index}.{back.get(inside, inside)}"
    else:
        module = back.get(module, module)
    return f"{fam.prefix}{module}.{param}"


def read_config(raw, path):
    """The FamilyConfig of a config.json's content `raw`: the family, then every field the family's file carries,
    of the right type and in range, or a UserError naming the file and the key as the file spells it. Other keys
    (architectures, ...) are ignored."""
    if not isinstance(raw, dict):
        raise UserError("is not a JSON object", path)
    model_type = raw.get("model_type", "bert")  # old BERT checkpoints do not say
    if not isinstance(model_type, str) or model_type not in FAMILIES:
        raise UserError(f"model_type {model_type!r} is not supported: minimtl reads {', '.join(FAMILIES)}", path)
    position_type = raw.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise UserError(f"position_embedding_type {position_type!r} is not supported (only 'absolute')", path)
    fam = FAMILIES[model_type]
    values = {**fam.defaults, "model_type": model_type}
    for f in fields(FamilyConfig):
        key = fam.file_key(f.name)
        if key not in raw or f.name in {"model_type"} | not_in_config(model_type):
            continue
        value, wanted = raw[key], int if f.type == int | None else f.type
        if not (value is None and f.type == int | None or is_a(value, wanted)):
            raise UserError(f"field {key!r} should be {wanted.__name__}, got {value!r}", path)
        values[f.name] = value if value is None else wanted(value)
    try:
        return FamilyConfig(**values)
    except ValueError as e:  # said with the file's own keys: "n_layers must be positive", not num_hidden_layers
        raise UserError(re.sub(r"\w+", lambda m: fam.file_key(m[0]), str(e)), path) from None


def is_a(value, kind):
    """Whether a JSON value is a `kind`: 2.0 is an int, True is neither an int nor a float."""
    if kind in (bool, str):
        return isinstance(value, kind)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and (kind is float or float(value).is_integer())


def load_encoder(path, verbose=False):
    """weights.load_encoder for a checkpoint of any family here."""
    return weights.load_encoder(path, verbose, read_config, encoder)


def config_json(config):
    """`config` as its family's own config.json keys (the inverse of `read_config`)."""
    fam, dropped = FAMILIES[config.model_type], not_in_config(config.model_type)
    return {fam.file_key(k): v for k, v in asdict(config).items() if k not in dropped}
