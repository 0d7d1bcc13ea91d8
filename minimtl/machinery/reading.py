"""How a checkpoint directory is read: only its own regular files, and one whole version of it.

Two rules, for the pretrained weights (--weights) and for trained runs (--checkpoint) alike:

1. **Regular files only.** Every file minimtl may read there (READ_FILES) must be a regular file. A FIFO
   named config.json would hang the reader, a device would be read without end, and a symlink may point
   anywhere on the machine. One kind of symlink is accepted, deliberately: the hub's cache stores a model as
   `models--ORG--NAME/snapshots/REV/FILE -> ../../blobs/SHA`, so a symlink whose target is a regular file
   in the `blobs/` folder of that same cache is read. Anything else is refused with one line.
2. **One version.** Training replaces a run directory whole at every save (checkpoint.atomic_directory:
   the old directory renamed away, the new one renamed in). A reader that opened config.json before a swap
   and model.safetensors after it would mix two versions. So `one_version` opens the directory once and
   reads every file through that handle (`/proc/self/fd/N/FILE`: the directory it was when opened, whatever
   is renamed since); if a swap removed the old version before all of it was read, it reads again. Where
   the system has no /proc/self/fd, files are read by path, without that guarantee.
"""

import os
import stat
import time
from pathlib import Path

from ..errors import UserError

READ_FILES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "vocab.json", "merges.txt",
              "tokenizer_config.json", "1_Pooling/config.json")
SWAP_RETRIES = 20  # each retry follows a save that swapped the directory mid-read: a save takes far longer
FD_DIR = Path("/proc/self/fd")


def check_files(directory, shown=None):
    """Refuse anything among READ_FILES in `directory` that is not a regular file (rule 1). `shown`: the
    directory as the user named it, for the message."""
    directory, shown = Path(directory), Path(shown or directory)
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
                            "are read)", shown / name)
        if not stat.S_ISREG(info.st_mode):
            raise UserError("is not a regular file", shown / name)


def one_version(directory, read):
    """`read(path)` on one whole version of the checkpoint in `directory` (rule 2), after `check_files`;
    errors name `directory`, not the handle it was read through."""
    directory = Path(directory)
    if not FD_DIR.is_dir():
        check_files(directory)
        return read(directory)
    for attempt in range(SWAP_RETRIES):
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:  # between a save's two renames, or no checkpoint at all
            if attempt + 1 < SWAP_RETRIES and _swapping(directory):
                time.sleep(0.01)
                continue
            raise UserError("no checkpoint here: train one first (python train.py) or pass --checkpoint DIR",
                            directory) from None
        except OSError as e:  # a file, a folder we may not read
            raise UserError(f"not a checkpoint directory ({e.strerror})", directory) from None
        pinned = FD_DIR / str(fd)
        try:
            check_files(pinned, shown=directory)
            return read(pinned)
        except UserError as e:
            if attempt + 1 < SWAP_RETRIES and _replaced(directory, fd):
                continue  # a save swapped in a new version and removed this one while it was read
            raise UserError(str(e).replace(str(pinned), str(directory))) from None
        finally:
            os.close(fd)


def _replaced(directory, fd):
    """Whether `directory` is no longer the directory that `fd` was opened on."""
    try:
        now, then = os.stat(directory), os.fstat(fd)
    except FileNotFoundError:
        return True
    return (now.st_dev, now.st_ino) != (then.st_dev, then.st_ino)


def _swapping(directory):
    """Whether a save's temporary sibling of `directory` exists: it is about to be renamed into place."""
    try:
        return any(entry.name.startswith((f".{directory.name}.tmp-", f".{directory.name}.old-"))
                   for entry in os.scandir(directory.parent))
    except OSError:
        return False
