"""How a checkpoint directory is read: only its own regular files, and one whole version of it.

Two rules, for the pretrained weights (--weights) and for trained runs (--checkpoint) alike:

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
"""

import os
import stat
import time
from pathlib import Path

from ..errors import UserError

READ_FILES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "vocab.json", "merges.txt",
              "tokenizer_config.json", "1_Pooling/config.json")
NO_CHECKPOINT = "no checkpoint here: train one first (python train.py) or pass --checkpoint DIR"
SWAP_RETRIES = 20  # each retry follows a save that swapped the directory mid-read: a save takes far longer


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
