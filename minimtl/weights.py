"""Pretrained weights: a published checkpoint directory -> a `Bert` with its weights loaded.

A checkpoint is a directory with `config.json` + `model.safetensors` (+ the tokenizer's files). Its family
(`model_type`: BERT, RoBERTa, XLM-R, DistilBERT, ELECTRA) decides how its tensors are named; families.py maps
every dialect onto the one set of names that `Bert` uses, and anything else in the file (MLM/NSP heads, the
pooler, buffers) is ignored, never guessed at:

    bert.encoder.layer.0...          -> encoder.layer.0...        (checkpoints saved from BertFor* models)
    ...LayerNorm.gamma / .beta       -> ...LayerNorm.weight / .bias (the original TensorFlow port)
    distilbert.transformer.layer.0.attention.q_lin -> encoder.layer.0.attention.self.query   (and so on)

The file's header alone (a few KB) gives every tensor's shape, so a config.json that disagrees with its
weights (an absurd vocab_size or layer count) is refused before anything is built or allocated.

The default checkpoint, all-MiniLM-L6-v2, is fetched on first use (`python -m minimtl.machinery.download`).
"""

import os
import re
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch.overrides import TorchFunctionMode

from .bert import Bert
from .errors import UserError, parse_json, quote, read_json
from .families import FAMILIES, our_name, read_config
from .paths import readable

DEFAULT_NAME = "all-MiniLM-L6-v2"  # the default --weights: 6 layers, 384 wide, uncased
MAX_HEADER = 100 << 20  # bytes of a safetensors header, as the format itself limits it
WORD_SHAPES_TENSOR = "embeddings.word_shapes.weight"  # the table --word-shape adds to a trained encoder (wordshape.py)


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


def read_shapes(path):
    """name -> shape of every tensor in a safetensors file, from its header alone: the first 8 bytes are the
    header's length (little-endian), then the header is JSON, {name: {"dtype", "shape", "data_offsets"}}."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 2 <= size <= min(MAX_HEADER, os.fstat(f.fileno()).st_size - 8):
                raise UserError(f"not a readable safetensors file (a header of {size:,} bytes)", path)
            text = f.read(size).decode("utf-8", "replace")
    except FileNotFoundError:
        raise UserError("weights file not found", path) from None
    except OSError as e:
        raise UserError(f"cannot read ({e.strerror})", path) from None
    try:
        header = parse_json(text, path)
    except UserError as e:
        raise UserError(f"not a readable safetensors file (its header: {e})") from None
    if not isinstance(header, dict):
        raise UserError("not a readable safetensors file (its header is not a JSON object)", path)
    shapes = {}
    for name, info in header.items():
        shape = info.get("shape") if isinstance(info, dict) else None
        if name != "__metadata__" and not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)):
            raise UserError(f"not a readable safetensors file (tensor {quote(name)} has no shape)", path)
        if name != "__metadata__":
            shapes[name] = tuple(shape)
    return shapes


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


class skip_random_init(TorchFunctionMode):
    """Modules built inside `with skip_random_init():` keep their parameters as allocated, unfilled.

    Building a model runs every layer's random initialisation (torch.nn.init: a uniform or normal draw per
    weight, 22M draws for MiniLM), a large part of a one-sentence `infer.py` after `import torch`, and all
    of it wasted when every weight is then loaded from a file. Only for models that `match_state_dict` fills
    next (it demands every parameter, so nothing unfilled survives) and after which no random draw depends on
    the generator's state: a trained checkpoint read for inference (machinery/checkpoint.py), not
    `load_encoder`, whose caller draws the heads' init next. (Building on the meta device would
    skip the fill too, but makes torch import its compiler stack, which costs more than the fill.)
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__module__", None) == "torch.nn.init":  # uniform_, normal_, kaiming_uniform_, ...
            return args[0] if args else kwargs["tensor"]  # the tensor, as the init functions return it
        return func(*args, **(kwargs or {}))


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


def check_weights_fit(config, shapes, source):
    """Refuse a weights file (its header's `shapes`) that does not fit `config`, before anything is built.

    The layer count is compared first, then the sizes every tensor's shape is made of: an absurd vocab_size,
    hidden_size or layer count never allocates anything.
    """
    own = FAMILIES[config.model_type].prefix
    found = {ours: shape for name, shape in shapes.items() if (ours := our_name(name, config.model_type))}
    # A mixed checkpoint (say a RoBERTa config over BERT's tensors) is named as such.
    others = sorted({f.prefix for f in FAMILIES.values() if f.prefix != own and any(n.startswith(f.prefix)
                                                                                     for n in shapes)})
    hint = (f" (its tensors are named {', '.join(p + '*' for p in others)}, but config.json says model_type "
            f"{config.model_type!r})") if others else ""
    layers = {int(m[1]) for name in found if (m := re.match(r"encoder\.layer\.(\d+)\.", name))}
    if len(layers) != config.num_hidden_layers or max(layers, default=-1) != len(layers) - 1:  # not 0 .. n-1
        raise UserError(f"holds {len(layers)} encoder layers, but config.json asks for {config.num_hidden_layers}"
                        + hint, source)
    # The sizes that decide how much building the model allocates. When the file agrees on these, the model
    # is about as large as the file itself, and match_state_dict then checks every tensor exactly.
    E, H = config.embedding_size or config.hidden_size, config.hidden_size
    sizes = {"embeddings.word_embeddings.weight": (config.vocab_size, E),
             "embeddings.position_embeddings.weight": (config.max_position_embeddings, E),
             "encoder.layer.0.attention.self.query.weight": (H, H),
             "encoder.layer.0.intermediate.dense.weight": (config.intermediate_size, H)}
    if config.type_vocab_size:
        sizes["embeddings.token_type_embeddings.weight"] = (config.type_vocab_size, E)
    check_shapes(sizes, found, source, hint)


def load_encoder(path, verbose=False):
    """Build a `Bert` from a checkpoint directory; returned in eval mode.

    `path` holds config.json and model.safetensors. Every parameter must be in the file with the
    shape the config implies: a partial load would silently leave random weights in a "pretrained" model.
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError("checkpoint directory not found (expected config.json + model.safetensors)", path)
    config_path, weights = path / "config.json", path / "model.safetensors"
    config = read_config(read_json(config_path, missing="config file not found"), config_path)
    shapes = read_shapes(weights)
    check_weights_fit(config, shapes, weights)
    if any(our_name(name, config.model_type) == WORD_SHAPES_TENSOR for name in shapes):
        raise UserError("was trained with --word-shape: its encoder adds a learned word-shape table to its input "
                        "embeddings, which a plain encoder would silently lose; it cannot be used as --weights",
                        weights)
    # Built with its random init, although every weight is loaded next: training draws its heads' init
    # from the same generator after this, so skipping it would change every seeded run's results.
    encoder = Bert(config)
    match_state_dict(encoder, read_state_dict(weights), weights, verbose,
                     rename=lambda name: our_name(name, config.model_type))
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
