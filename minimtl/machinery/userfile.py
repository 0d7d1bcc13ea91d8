"""Writing a file at a path the user named (`infer.py --html PATH`) without damaging anything else.

    with replace_file("predictions.html") as f:
        f.write(page)

The path must be a regular file or not exist yet. Anything else is refused before any work, in one line:
renaming over a symlink would replace the link (not the file it points to), and renaming over a device,
a FIFO or a socket (as root, over /dev/null) would put a regular file in its place.

The content goes to a sibling temporary directory, `.NAME.tmp-<pid>/`, and is renamed over the path only
once complete, so an error, a Ctrl-C or a full disk midway leave the path as it was; the temporary is
removed on any exception. A SIGKILL allows no clean-up, so each write first removes the temporaries of
processes that no longer exist, by the rule train.py's run directories follow (machinery/rundir.py:
`stale_temporaries`, whose pattern this naming matches).
"""

import os
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path

from ..guards.errors import UserError
from .rundir import stale_temporaries


def check_writable_path(path):
    """The mode of the regular file at `path` (None when there is none yet), or a UserError saying why a
    file must not be written there."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise UserError(f"cannot write ({e.strerror})", path) from None
    if stat.S_ISLNK(info.st_mode):
        raise UserError(f"is a symbolic link: give the path of the file itself ({os.path.realpath(path)})", path)
    if stat.S_ISDIR(info.st_mode):
        raise UserError("is a directory: give a file name", path)
    if not stat.S_ISREG(info.st_mode):
        kind = "device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else \
            "FIFO" if stat.S_ISFIFO(info.st_mode) else "socket"
        raise UserError(f"is a {kind}, not a regular file: give a file name", path)
    return stat.S_IMODE(info.st_mode)


@contextmanager
def replace_file(path, encoding="utf-8"):
    """A text file to write; on leaving the block without an exception it replaces `path` atomically."""
    target = Path(os.path.abspath(path))  # a name of its own: "." or "a/.." would make no sibling
    mode = check_writable_path(path)
    for stale in stale_temporaries(target):
        if stale.name.startswith(f".{target.name}.tmp-"):  # ours; an `.old-` sibling is not a file's
            shutil.rmtree(stale, ignore_errors=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    try:
        try:
            tmp.mkdir()
        except FileExistsError:  # this pid's, from a run that died before this process got its pid
            shutil.rmtree(tmp)
            tmp.mkdir()
        with open(tmp / target.name, "x", encoding=encoding) as f:
            yield f
        if mode is not None:
            os.chmod(tmp / target.name, mode)  # a replaced file keeps who may read it
        check_writable_path(path)  # again: the path may have changed while the content was made
        os.replace(tmp / target.name, target)
    except OSError as e:
        raise UserError(f"cannot write ({e.strerror})", path) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
