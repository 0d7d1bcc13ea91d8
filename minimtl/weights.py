"""Pretrained weights: a published checkpoint directory -> a `Bert` with its weights loaded.

A checkpoint is a directory with `config.json` + `model.safetensors` (+ the tokenizer's files). Tensor names
are mapped onto the ones `Bert` uses (`BertConfig.encoder_name`), and anything else in the file (MLM/NSP
heads, the pooler, buffers) is ignored, never guessed at:

    bert.encoder.layer.0...          -> encoder.layer.0...        (checkpoints saved from BertFor* models)
    ...LayerNorm.gamma / .beta       -> ...LayerNorm.weight / .bias (the original TensorFlow port)

Every tensor is checked once the model is built (a run checks a user's file before: machinery/reading.py).
"""

from dataclasses import fields
from pathlib import Path

from .bert import Bert, BertConfig
from .guards.errors import UserError, read_json
from .guards.files import read_state_dict


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
    """Load `tensors` into `module`, demanding every parameter, its exact shape and a floating-point type, and
    refusing a tensor of the module's kind that the module lacks: a file that holds a table its config says
    it has not (a token-type table under type_vocab_size 0) contradicts it, and neither can be believed.

    `rename` maps a file's tensor name to the module's (None = not ours: an MLM head, a pooler; ignored).
    """
    renamed = {ours: tensor for name, tensor in tensors.items() if (ours := rename(name)) is not None}
    expected = module.state_dict()
    check_shapes({k: v.shape for k, v in expected.items()}, {k: v.shape for k, v in renamed.items()}, source)
    extra = sorted(set(renamed) - set(expected))
    odd = [f"{k} is {renamed[k].dtype}" for k, v in expected.items()
           if v.is_floating_point() and not renamed[k].is_floating_point()]
    if extra or odd:
        raise UserError(f"holds tensors its config.json does not build: {', '.join(extra[:8])}" if extra else
                        f"holds weights that are not floating-point numbers: {'; '.join(odd[:8])}", source)
    if verbose and len(renamed) < len(tensors):
        ignored = sorted(name for name in tensors if rename(name) is None)
        print(f"{source}: ignored {len(ignored)} tensors the model does not use: {', '.join(ignored)}")
    # assign: the module takes the file's tensors themselves (safetensors maps the file: a page is read from
    # disk when first used, and a table row no text asks for never is) instead of copying each into the one it
    # was built with. The mapping is private: writing to a weight (training) copies its page, never the file.
    module.load_state_dict({k: renamed[k].to(expected[k].dtype) for k in expected}, assign=True)


def read_config(raw, path):
    """The BertConfig of a config.json's content `raw`, from the keys it names (others, such as `architectures`,
    are ignored), taken as they are: a run reads a user's file with a reader that checks each (`read`)."""
    return BertConfig(**{f.name: raw[f.name] for f in fields(BertConfig) if f.name in raw})


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
