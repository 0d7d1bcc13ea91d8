"""Pretrained weights: a published checkpoint directory -> a `Bert` with its weights loaded.

A checkpoint is a directory with `config.json` + `model.safetensors` (+ the tokenizer's files). Tensor names
are mapped onto the ones `Bert` uses (`BertConfig.encoder_name`), and anything else in the file (MLM/NSP
heads, the pooler, buffers) is ignored, never guessed at:

    bert.encoder.layer.0...          -> encoder.layer.0...        (checkpoints saved from BertFor* models)
    ...LayerNorm.gamma / .beta       -> ...LayerNorm.weight / .bias (the original TensorFlow port)

A run checks a user's checkpoint against its file's header before it calls this (machinery/reading.py), so
that an absurd config.json never allocates anything; here every tensor is checked once the model is built.
"""

from dataclasses import fields
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file

from .bert import Bert, BertConfig
from .errors import UserError, read_json
from .paths import readable


def read_state_dict(path):
    """The tensors of a safetensors file, as a state dict; a damaged file is a UserError."""
    if not Path(path).is_file():  # safetensors says so only as a RuntimeError, like any other failure
        raise UserError("weights file not found", path)
    try:
        with readable(path) as name:
            return load_file(name)
    except FileNotFoundError:
        raise UserError("weights file not found", path) from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"not a readable safetensors file ({e})", path) from None


def check_shapes(expected, found, source, hint=""):
    """Every name in `expected` (name -> shape) must be in `found` with that shape; `hint` ends the message."""
    missing = sorted(set(expected) - set(found))
    wrong = [f"{k} {tuple(found[k])} (expected {tuple(v)})" for k, v in expected.items()
             if k in found and tuple(found[k]) != tuple(v)]
    if missing:
        raise UserError(f"missing tensors: {', '.join(missing[:8])}" + (f" and {len(missing) - 8} more"
                        if len(missing) > 8 else "") + hint, source)
    if wrong:
        raise UserError(f"tensor shapes do not match the config: {'; '.join(wrong[:8])}" + hint, source)


def match_state_dict(module, tensors, source, verbose=False, rename=lambda name: name):
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
    check_shapes({k: v.shape for k, v in expected.items()}, {k: v.shape for k, v in renamed.items()}, source)
    unused = sorted(set(renamed) - set(expected)) + ignored
    if verbose and unused:
        print(f"{source}: ignored {len(unused)} tensors the model does not use: {', '.join(sorted(unused))}")
    # assign: the module takes the file's tensors themselves (safetensors maps the file: a page is read from
    # disk when first used, and a table row no text asks for never is) instead of copying each into the one it
    # was built with. The mapping is private: writing to a weight (training) copies its page, never the file.
    module.load_state_dict({k: renamed[k].to(expected[k].dtype) for k in expected}, assign=True)


def read_config(raw, path, kind=BertConfig, keys=None, values=None, skip=()):
    """The `kind` (BertConfig) of a config.json's content `raw`: every known key of the right type and in range,
    or a UserError naming the file and the key. Other keys (architectures, ...) are ignored. For another
    checkpoint family: `keys` maps the file's key to a field where they differ, `values` gives fields known
    before the file is read (defaults), and the fields in `skip` are never read from the file."""
    if not isinstance(raw, dict):
        raise UserError("is not a JSON object", path)
    keys = keys or {}
    ours = {keys.get(key, key): value for key, value in raw.items() if key not in keys.values()}
    values = dict(values or {})
    for f in fields(kind):
        if f.name not in ours or f.name in skip:
            continue
        value, wanted = ours[f.name], int if f.type == int | None else f.type
        if not (value is None and f.type == int | None or is_a(value, wanted)):
            key = next((k for k, v in keys.items() if v == f.name), f.name)
            raise UserError(f"field {key!r} should be {wanted.__name__}, got {value!r}", path)
        values[f.name] = value if value is None else wanted(value)
    try:
        return kind(**values)
    except ValueError as e:
        raise UserError(str(e), path) from None


def is_a(value, kind):
    """Whether a JSON value is a `kind`: 2.0 is an int, True is neither an int nor a float."""
    if kind in (bool, str):
        return isinstance(value, kind)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and (kind is float or float(value).is_integer())


def load_encoder(path, verbose=False, read=read_config, build=Bert):
    """Build a `Bert` from a checkpoint directory; returned in eval mode. `read(raw, path)`: its config.json's
    content -> the config; `build(config)`: the encoder (another checkpoint family hands in its own).

    `path` holds config.json and model.safetensors. Every parameter must be in the file with the
    shape the config implies: a partial load would silently leave random weights in a "pretrained" model.
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError("checkpoint directory not found (expected config.json + model.safetensors)", path)
    config_path, weights = path / "config.json", path / "model.safetensors"
    config = read(read_json(config_path, missing="config file not found"), config_path)
    # Built with its random init, although every weight is loaded next: training draws its heads' init
    # from the same generator after this, so skipping it would change every seeded run's results.
    encoder = build(config)
    match_state_dict(encoder, read_state_dict(weights), weights, verbose, rename=config.encoder_name)
    return encoder.eval()
