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

(bert.py holds the differences themselves; the tokenizers are tokenization.py's business.) Names go both
ways: `our_name` reads a published file, `published_name` writes a trained run that the family's own
`transformers` class loads (`RobertaModel.from_pretrained(run)`). Anything else, another model_type or
another `position_embedding_type`, is refused here, in one line, before anything is built.
"""

from dataclasses import asdict, dataclass, field, fields

from .bert import BertConfig
from .errors import UserError


@dataclass(frozen=True)
class Family:
    prefix: str  # of the encoder's tensors in a file saved from a task model (RobertaForMaskedLM, ...)
    layers: str = "encoder.layer"  # where the blocks are
    renames: dict = field(default_factory=dict)  # published module path -> ours, inside a block or outside
    keys: dict = field(default_factory=dict)  # config.json key -> BertConfig field, where they differ
    defaults: dict = field(default_factory=dict)  # the family's defaults where they differ from BERT's


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


def our_name(name, model_type):
    """A published tensor name as `Bert` calls it, or None for tensors the encoder does not use (task heads,
    the pooler, buffers, and anything under another family's prefix)."""
    fam = FAMILIES[model_type]
    if name.startswith(fam.prefix):
        name = name[len(fam.prefix):]
    module, _, param = name.rpartition(".")
    # The original TensorFlow port of BERT called LayerNorm's parameters gamma and beta.
    param = {"gamma": "weight", "beta": "bias"}.get(param, param) if module.endswith("LayerNorm") else param
    if module.startswith(fam.layers + "."):
        index, _, inside = module[len(fam.layers) + 1:].partition(".")
        module = f"encoder.layer.{index}.{fam.renames.get(inside, inside)}"
    else:
        module = fam.renames.get(module, module)
    if module == "embeddings" and param == "position_ids" or not module.startswith(("embeddings.", "encoder.")):
        return None
    return f"{module}.{param}"


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
    """The BertConfig of a config.json's content `raw`: the family, then every known key of the right type and
    in range, or a UserError naming the file and the key. Other keys (architectures, ...) are ignored."""
    if not isinstance(raw, dict):
        raise UserError("is not a JSON object", path)
    model_type = raw.get("model_type", "bert")  # old BERT checkpoints do not say
    if not isinstance(model_type, str) or model_type not in FAMILIES:
        raise UserError(f"model_type {model_type!r} is not supported: minimtl reads {', '.join(FAMILIES)}", path)
    position_type = raw.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise UserError(f"position_embedding_type {position_type!r} is not supported (only 'absolute')", path)
    fam = FAMILIES[model_type]
    ours = {fam.keys.get(key, key): value for key, value in raw.items() if key not in fam.keys.values()}
    values = {**fam.defaults, "model_type": model_type}
    for f in fields(BertConfig):
        if f.name not in ours or f.name == "model_type" or f.name in not_in_config(model_type):
            continue
        value, kind = ours[f.name], int if f.type == int | None else f.type
        if not (value is None and f.type == int | None or is_a(value, kind)):
            key = next((k for k, v in fam.keys.items() if v == f.name), f.name)
            raise UserError(f"field {key!r} should be {kind.__name__}, got {value!r}", path)
        values[f.name] = value if value is None else kind(value)
    try:
        return BertConfig(**values)
    except ValueError as e:
        raise UserError(str(e), path) from None


def is_a(value, kind):
    """Whether a JSON value is a `kind`: 2.0 is an int, True is neither an int nor a float."""
    if kind in (bool, str):
        return isinstance(value, kind)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and (kind is float or float(value).is_integer())


def config_json(config):
    """`config` as its family's own config.json keys (the inverse of `read_config`)."""
    back = {ours: theirs for theirs, ours in FAMILIES[config.model_type].keys.items()}
    dropped = not_in_config(config.model_type)
    return {back.get(k, k): v for k, v in asdict(config).items() if k not in dropped}
