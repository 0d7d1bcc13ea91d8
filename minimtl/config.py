"""The encoder's shape, read from a Hugging Face style `config.json`.

Only the fields that change the computation are kept; everything else in the file (architectures,
transformers_version, ...) is ignored. Names are the published ones, so a config round-trips unchanged.
"""

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .errors import UserError, read_json


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    hidden_act: str = "gelu"

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act != "gelu":
            # "gelu" in BERT configs means the exact erf form; the tanh approximations are other models.
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported (only 'gelu')")

    @classmethod
    def from_dict(cls, raw, source="config"):
        if not isinstance(raw, dict):
            raise UserError("is not a JSON object", source)
        known = {f.name: f.type for f in fields(cls)}
        kwargs = {}
        for name, kind in known.items():
            if name not in raw:
                continue
            value = raw[name]
            ok = isinstance(value, str) if kind is str else (
                isinstance(value, (int, float)) and not isinstance(value, bool)
                and (kind is float or float(value).is_integer()))
            if not ok:
                raise UserError(f"field {name!r} should be {kind.__name__}, got {value!r}", source)
            kwargs[name] = kind(value)
        try:
            return cls(**kwargs)
        except ValueError as e:
            raise UserError(str(e), source) from None

    @classmethod
    def from_json(cls, path):
        return cls.from_dict(read_json(path, missing="config file not found"), source=Path(path))

    def to_dict(self):
        return asdict(self)
