"""How a checkpoint directory is read: only its own regular files, one whole version of it, sizes checked first.

Three rules, for the pretrained weights (--weights) and for trained runs (--checkpoint) alike:

1. **Regular files only.** Every file minimtl may read there (READ_FILES) must be a regular file. A FIFO
   named config.json would hang the reader, a device would be read without end, and a symlink may point
   anywhere on the machine. One kind of symlink is accepted, deliberately: the hub's cache stores a model as
   `models--ORG--NAME/snapshots/REV/FILE -> ../../blobs/SHA`, so a symlink whose target is a regular file
   in the `blobs/` folder of that same cache is read. Anything else is refused with one line.
2. **One version.** Training replaces a run directory whole at every save (checkpoint.atomic_directory:
   the old directory renamed away, a new one renamed in; never the same directory back). A reader that
   opened config.json before a swap and model.safetensors after it would mix two versions. So `one_version`
   notes which directory the path names (device and inode) before reading and again after: the same one
   means every file was opened in that one version (what an open file holds stays readable when its
   directory is renamed or removed); another one means a swap happened meanwhile, and it reads again.
3. **Sizes before anything is built.** The weights file's header alone (a few KB) gives every tensor's
   shape, so a config.json that disagrees with its weights (an absurd vocab_size or layer count) is refused
   before a model is built or anything allocated (`check_weights_fit`).
"""

import os
import re
import shutil
import stat
import time
from pathlib import Path

from ..guards.errors import UserError, parse_json, quote
from ..extensions.families import FAMILIES
from ..weights import check_shapes

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer_config.json",
                   "special_tokens_map.json")  # whichever the checkpoint has (family_tokenizers.py); a run keeps them
READ_FILES = ("config.json", "model.safetensors", *TOKENIZER_FILES, "1_Pooling/config.json")  # all it may open
NO_CHECKPOINT = "no checkpoint here: train one first (python train.py) or pass --checkpoint DIR"
SWAP_RETRIES = 20  # each retry follows a save that swapped the directory mid-read: a save takes far longer
MAX_HEADER = 100 << 20  # bytes of a safetensors header, as the format itself limits it


def copy_tokenizer(source, directory):
    """The tokenizer files (TOKENIZER_FILES) that the checkpoint `source` has, copied into `directory`."""
    check_files(source)  # what is copied is what a reader may open: no link out of the checkpoint
    for name in TOKENIZER_FILES:
        if (Path(source) / name).is_file():
            shutil.copyfile(Path(source) / name, Path(directory) / name)


def check_files(directory):
    """Refuse anything among READ_FILES in `directory` that is not a regular file (rule 1)."""
    directory = Path(directory)
    real = Path(os.path.realpath(directory))
    for name in READ_FILES:
        try:
            info = os.lstat(directory / name)
        except (FileNotFoundError, NotADirectoryError):
            continue  # absent: the reader that needs it says so
        if stat.S_ISLNK(info.st_mode):
            target = Path(os.path.realpath(directory / name))
            blobs = real.parent.parent / "blobs"
            if real.parent.name == "snapshots" and target.parent == blobs and target.is_file():
                continue
            raise UserError("is a symbolic link out of the checkpoint (only a hub cache's links into its blobs/ "
                            "are read)", directory / name)
        if not stat.S_ISREG(info.st_mode):
            raise UserError("is not a regular file", directory / name)


def one_version(directory, read):
    """`read(directory)` on one whole version of the checkpoint there (rule 2), after `check_files`."""
    directory = Path(directory)
    for attempt in range(SWAP_RETRIES):
        last = attempt + 1 == SWAP_RETRIES
        try:
            before = _identity(directory)
        except FileNotFoundError:  # between a save's two renames, or no checkpoint at all
            if not last and _swapping(directory):
                time.sleep(0.01)
                continue
            raise UserError(NO_CHECKPOINT, directory) from None
        try:
            check_files(directory)
            result = read(directory)
        except UserError:
            if not last and _identity_or_none(directory) != before:
                continue  # a save swapped in a new version, and removed this one, while it was read
            raise
        if _identity_or_none(directory) == before:  # no swap since the first file was opened: one version
            return result
    raise UserError("the checkpoint was replaced again and again while it was read (a training run saving "
                    "into it?): try again", directory)


def _identity(directory):
    info = os.stat(directory)
    return info.st_dev, info.st_ino


def _identity_or_none(directory):
    try:
        return _identity(directory)
    except OSError:
        return None


def _swapping(directory):
    """Whether a save's temporary sibling of `directory` exists: it is about to be renamed into place."""
    try:
        return any(entry.name.startswith((f".{directory.name}.tmp-", f".{directory.name}.old-"))
                   for entry in os.scandir(directory.parent))
    except OSError:
        return False


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


def check_weights_fit(config, source):
    """Refuse a weights file that does not fit `config` (a families.FamilyConfig), from its header, before
    anything is built. A mixed checkpoint (say a RoBERTa config over BERT's tensors) is named as such; else
    the error names config.json and the key, as the file spells it, whose value the tensors contradict.

    The layer count is compared first, then the sizes every tensor's shape is made of: an absurd vocab_size,
    hidden_size or layer count never allocates anything.
    """
    source = Path(source)
    shapes = read_shapes(source)
    own = FAMILIES[config.model_type].prefix
    others = sorted({f.prefix for f in FAMILIES.values() if f.prefix != own and any(n.startswith(f.prefix)
                                                                                     for n in shapes)})
    hint = (f" (its tensors are named {', '.join(p + '*' for p in others)}, but config.json says model_type "
            f"{config.model_type!r})") if others else ""
    found = {ours: shape for name, shape in shapes.items() if (ours := config.encoder_name(name))}
    layers = {int(m[1]) for name in found if (m := re.match(r"encoder\.layer\.(\d+)\.", name))}
    spelled = FAMILIES[config.model_type].file_key  # a field as the family's config.json names it
    blame = source if others else source.with_name("config.json")
    if len(layers) != config.num_hidden_layers or max(layers, default=-1) != len(layers) - 1:  # not 0 .. n-1
        raise UserError(f"{spelled('num_hidden_layers')} {config.num_hidden_layers}: "
                        f"{source.name} holds {len(layers)} encoder layers, but config.json asks for "
                        f"{config.num_hidden_layers}" + hint, blame)
    # The sizes that decide how much building the model allocates. When the file agrees on these, the model
    # is about as large as the file itself, and match_state_dict then checks every tensor exactly.
    width = "embedding_size" if config.embedding_size else "hidden_size"
    axes = {"embeddings.word_embeddings.weight": ("vocab_size", width),  # the config field of each dimension
            "embeddings.position_embeddings.weight": ("max_position_embeddings", width),
            "encoder.layer.0.attention.self.query.weight": ("hidden_size", "hidden_size"),
            "encoder.layer.0.intermediate.dense.weight": ("intermediate_size", "hidden_size")}
    if config.type_vocab_size:
        axes["embeddings.token_type_embeddings.weight"] = ("type_vocab_size", width)
    sizes = {name: tuple(getattr(config, field) for field in fields) for name, fields in axes.items()}
    for name, shape in sizes.items():
        for field, want, have in zip(axes[name], shape, found.get(name, shape)):
            if want != have and not others:
                raise UserError(f"{spelled(field)} {want} does not fit {source.name}: {name} "
                                f"{tuple(found[name])} (expected {shape})", blame)
    check_shapes(sizes, found, source, hint)  # a missing tensor; any tensor of a mixed checkpoint
