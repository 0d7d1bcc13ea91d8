"""Pretrained weights: a published BERT checkpoint directory -> a `Bert` with its weights loaded.

A checkpoint is a directory with `config.json` + `model.safetensors` (+ `vocab.txt` for the tokenizer).
Published BERT files come in a few dialects; they are all mapped onto the one set of names that
`Bert` uses, and anything else in the file (MLM/NSP heads, the pooler, buffers) is ignored, never guessed at:

    bert.encoder.layer.0...          -> encoder.layer.0...        (checkpoints saved from BertFor* models)
    ...LayerNorm.gamma / .beta       -> ...LayerNorm.weight / .bias (the original TensorFlow port)

The default checkpoint, all-MiniLM-L6-v2, is fetched on first use (`python -m minimtl.machinery.download`).
"""

from dataclasses import fields
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file

from .bert import Bert, BertConfig
from .errors import UserError, read_json

DEFAULT_NAME = "all-MiniLM-L6-v2"  # the default --weights: 6 layers, 384 wide, uncased


def canonical_name(name):
    """A published tensor name in our naming, or None for tensors the encoder does not use."""
    if name.startswith("bert."):
        name = name[len("bert."):]
    if name.endswith("LayerNorm.gamma"):
        name = name[: -len("gamma")] + "weight"
    elif name.endswith("LayerNorm.beta"):
        name = name[: -len("beta")] + "bias"
    if name == "embeddings.position_ids" or not name.startswith(("embeddings.", "encoder.")):
        return None
    return name


def read_state_dict(path):
    """The tensors of a safetensors file, as a state dict; a damaged file is a UserError."""
    try:
        return load_file(path)
    except FileNotFoundError:
        raise UserError("weights file not found", path) from None
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"not a readable safetensors file ({e})", path) from None


def match_state_dict(module, tensors, source, verbose=False, rename=canonical_name):
    """Load `tensors` into `module`, demanding every parameter and its exact shape.

    `rename` maps a file's tensor name to the module's (None = not ours, ignored).
    """
    renamed, ignored = {}, []
    for name, tensor in tensors.items():
        ours = rename(name)
        if ours is None:
            ignored.append(name)
        else:
            renamed[ours] = tensor
    expected = module.state_dict()
    missing = sorted(set(expected) - set(renamed))
    wrong = [f"{k} {tuple(renamed[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if k in renamed and renamed[k].shape != v.shape]
    if missing:
        raise UserError(f"missing tensors: {', '.join(missing[:8])}" + (f" and {len(missing) - 8} more"
                        if len(missing) > 8 else ""), source)
    if wrong:
        raise UserError(f"tensor shapes do not match the config: {'; '.join(wrong[:8])}", source)
    unused = sorted(set(renamed) - set(expected)) + ignored
    if verbose and unused:
        print(f"{source}: ignored {len(unused)} tensors the model does not use: {', '.join(sorted(unused))}")
    module.load_state_dict({k: renamed[k] for k in expected})


def bert_config(raw, path):
    """The BertConfig in `raw`, the content of `path` (a config.json): every known field of the right type and
    in range, or a UserError naming the file and the key. Other keys (architectures, ...) are ignored."""
    if not isinstance(raw, dict):
        raise UserError("is not a JSON object", path)
    values = {}
    for field in fields(BertConfig):
        if field.name not in raw:
            continue
        value, kind = raw[field.name], field.type
        ok = isinstance(value, str) if kind is str else (
            isinstance(value, (int, float)) and not isinstance(value, bool)
            and (kind is float or float(value).is_integer()))
        if not ok:
            raise UserError(f"field {field.name!r} should be {kind.__name__}, got {value!r}", path)
        values[field.name] = kind(value)
    try:
        return BertConfig(**values)
    except ValueError as e:
        raise UserError(str(e), path) from None


def load_encoder(path, verbose=False):
    """Build a `Bert` from a checkpoint directory; returned in eval mode.

    `path` holds config.json and model.safetensors. Every parameter must be in the file with the
    shape the config implies: a partial load would silently leave random weights in a "pretrained" model.
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError("checkpoint directory not found (expected config.json + model.safetensors)", path)
    config = path / "config.json"
    encoder = Bert(bert_config(read_json(config, missing="config file not found"), config))
    match_state_dict(encoder, read_state_dict(path / "model.safetensors"), path / "model.safetensors", verbose)
    return encoder.eval()


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
