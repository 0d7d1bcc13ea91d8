"""The rules that keep `train.py --out DIR` from destroying anything that is not its own.

Every save replaces the run directory as a whole: the new contents are built in a sibling
`.DIR.tmp-<pid>`, then DIR is renamed to `.DIR.old-<pid>`, the new one renamed to DIR, and the old one
removed. That is only safe under three rules:

1. Only a minimtl run is ever replaced. A run holds a small marker file, `run.json`
   (`{"minimtl_run": 1, "finished": false, ...}`). Before any work, `check_out` looks at --out:
   a missing path or an empty directory starts a new run; a directory with a marker is an earlier run,
   replaced only with --overwrite; anything else (a file, a symlink, a folder of the user's own files)
   is refused and left exactly as it was. The parent must be writable, which is tested by creating and
   removing a probe there, not guessed from permission bits.
2. One writer per run directory. `RunLock` holds an exclusive `flock` on `.DIR.lock`, beside DIR
   rather than in it because DIR itself is swapped out at every save. The kernel drops the lock when
   its process dies, however it dies, so a crash never leaves a run locked.
3. A temporary is removed by its owner, or once its owner is provably dead: `stale_temporaries` lists
   the `.DIR.tmp-<pid>` and `.DIR.old-<pid>` siblings whose pid is no live process. A pid names a process
   on this machine only: on a filesystem shared between machines, only the RunLock keeps other writers out.
"""

import errno
import fcntl
import json
import os
import re
import shutil
import stat
from datetime import datetime, timezone
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import save_file

from ..guards.errors import UserError

MARKER = "run.json"
MAX_MARKER_BYTES = 64 * 1024  # ours is ~200 bytes: a bigger run.json is someone else's file, not read whole


def check_out(path, overwrite):
    """What training into `path` will do, "new" or "overwrite", or a UserError when it must not touch it."""
    out = Path(os.path.abspath(path))  # "." or "a/.." have no name, and the siblings are named after it
    try:
        info = os.lstat(out)
    except FileNotFoundError:
        info = None  # the parents may be missing too: they are created below
    except OSError as e:  # a parent that is a file, a name too long, a folder we may not look into
        raise UserError(f"cannot write here ({_reason(e)})", path) from None
    replacing = False
    if info is not None:
        if stat.S_ISLNK(info.st_mode) and out.is_dir():
            # The first save would replace the link by a real directory and leave the target stale.
            raise UserError(f"is a symbolic link: pass the directory it points to ({out.resolve()}) as --out", path)
        if not stat.S_ISDIR(info.st_mode):  # a file, a link to one, a dangling link, a fifo...
            raise UserError("is a file, not a run directory: pick another --out or remove it", path)
        try:
            with os.scandir(out) as entries:
                replacing = next(entries, None) is not None  # an empty directory holds nothing to lose
        except OSError as e:
            raise UserError(f"cannot write here ({_reason(e)})", path) from None
        if replacing and read_marker(out) is None:
            raise UserError("holds files that are not a minimtl run: pick another --out or remove it", path)
        if replacing and not overwrite:
            raise UserError("already holds a run: continue it with --resume, replace it with --overwrite, "
                            "or pick another --out", path)
        if os.path.ismount(out):  # renaming it fails with EBUSY, at the end of the first epoch
            raise UserError("cannot write here (a mount point cannot be replaced: use a folder inside it)", path)
    # A save creates siblings of DIR and renames DIR itself, so it is the parent that must be writable.
    # Doing it once is the only reliable test: it also catches read-only mounts, ACLs and sibling names
    # over the length limit. The probe's name is as long as the `.DIR.tmp-<pid>` a save will create.
    probe = out.parent / f".{out.name}.prb-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)  # creates only what is missing: nothing is lost
        probe.mkdir(exist_ok=True)
        probe.rmdir()
    except OSError as e:
        raise UserError(f"cannot write here ({_reason(e)})", path) from None
    return "overwrite" if replacing else "new"


def _reason(error):
    if error.errno == errno.ENOTDIR:
        return "a parent in the path is a file, not a directory"
    return error.strerror or str(error)


def write_marker(directory, finished):
    """Mark `directory` as a minimtl run (finished or not), replacing its marker atomically."""
    marker = {
        "minimtl_run": 1,  # the marker's format version; its presence is what makes a folder a run
        "finished": bool(finished),
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "about": "written by minimtl's train.py: this folder is a training run, which --overwrite replaces whole",
    }
    write_whole(Path(directory) / MARKER, json.dumps(marker, indent=2) + "\n")


def write_whole(path, text):
    """Replace the file `path` by `text` atomically: a reader finds the old contents or the new, never half."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())  # the rename below must not be able to reach the disk before the contents
    os.replace(tmp, path)


def drop_state(directory, out, keep):
    """The end of the finished run `out`, whose marker and best checkpoint are written: remove its resume state
    `directory`, which --resume cannot use, unless `keep` (--keep-resume). Returns the line that says which."""
    size = f"{sum(f.stat().st_size for f in directory.iterdir()) / 2**20:,.1f} MiB"
    if keep:
        return f"kept {directory} ({size}, --keep-resume): --resume {out} --epochs N trains this run further"
    try:
        # state.json first: the rest is no state without it, so a crash halfway leaves a run whose state was
        # dropped, never one whose state is half there.
        (directory / "state.json").unlink()
        shutil.rmtree(directory)
    except OSError as e:
        return f"could not remove {directory} ({e.strerror or e}): the run is finished and whole; remove it by hand"
    return (f"removed {directory} ({size}): a finished run is not resumed; --keep-resume keeps it, so that "
            f"--resume {out} --epochs N can train the run further")


def read_marker(path):
    """The marker of the run directory `path` as a dict, or None when it has none that minimtl wrote."""
    try:
        # O_NOFOLLOW: a symlinked run.json is not ours. O_NONBLOCK: a fifo named run.json must not hang us.
        fd = os.open(Path(path) / MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            raw = f.read(MAX_MARKER_BYTES + 1)
        data = json.loads(raw) if len(raw) <= MAX_MARKER_BYTES else None
    except (OSError, ValueError, RecursionError):  # ValueError: not JSON or not text; Recursion: "[[[[..."
        return None
    ours = isinstance(data, dict) and type(data.get("minimtl_run")) is int  # bool is an int: excluded
    return data if ours else None


def is_finished(path):
    """Whether `path` is a minimtl run whose training ran to its end."""
    marker = read_marker(path)
    return marker is not None and marker.get("finished") is True


class RunLock:
    """`with RunLock(out):` makes this process the only writer of the run directory `out`.

    Another process (or another RunLock in this one: flock belongs to an open file, not to a process)
    gets a UserError naming the holder's pid. The lock file is removed on exit, while still locked; a
    process that opened it just before then finds, once it has the lock, that the file it locked is no
    longer the one at that path, and starts again. Without that check, removing the file would let two
    processes each lock a different file of the same name.
    """

    def __init__(self, out):
        self.out = Path(out)
        self.path = self.out.parent / f".{self.out.name}.lock"
        self._fd = None

    def __enter__(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                    current = _same_file(fd, self.path)
                    os.close(fd)
                    if not current:  # its holder is in the middle of letting go: try the new file
                        continue
                    holder = holder if holder.isdigit() else "unknown"  # empty until the holder writes it
                    raise UserError(f"another training process (pid {holder}) is writing this run directory: "
                                    "wait for it or pick another --out", self.out) from None
                except BaseException:
                    os.close(fd)
                    raise
                if _same_file(fd, self.path):
                    break
                os.close(fd)  # we locked a file its previous holder has just removed
        except OSError as e:  # a read-only parent, a filesystem without locks
            raise UserError(f"cannot write here ({_reason(e)})", self.out) from None
        os.ftruncate(fd, 0)  # a holder killed earlier left its pid here
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc_info):
        if _same_file(self._fd, self.path):  # only if nobody removed it by hand and made another
            self.path.unlink(missing_ok=True)
        os.close(self._fd)  # this releases the lock
        self._fd = None


def _same_file(fd, path):
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def save_tensors(tensors, path, metadata=None):
    """safetensors' save_file, its failures to write (a full disk) raised as the OSError they are: safetensors
    reports them as SafetensorError, which every caller's `except OSError` would let through as a traceback."""
    try:
        save_file(tensors, path, metadata=metadata)
    except SafetensorError as e:
        code = re.search(r"os error (\d+)", str(e))  # the OS error's number, as Rust's io::Error says it
        number = int(code[1]) if code else errno.EIO
        raise OSError(number, os.strerror(number), str(path)) from None


def stale_temporaries(directory):
    """The `.NAME.tmp-<pid>` and `.NAME.old-<pid>` directories beside `directory` whose process is dead."""
    directory = Path(directory)
    pattern = re.compile(re.escape(f".{directory.name}.") + r"(?:tmp|old)-([0-9]{1,10})")  # ASCII digits only
    try:
        entries = list(os.scandir(directory.parent))
    except FileNotFoundError:
        return []
    stale = []
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        # Only real directories, as a save makes them: never a symlink, whose removal could reach elsewhere.
        if match and entry.is_dir(follow_symlinks=False) and not pid_alive(int(match.group(1))):
            stale.append(Path(entry.path))
    return sorted(stale)


def pid_alive(pid):
    """Whether a process with this pid exists on this machine (another user's, or a zombie, counts)."""
    if pid <= 0:
        return False  # os.kill(0) or os.kill(-n) would address whole process groups
    try:
        os.kill(pid, 0)  # signal 0 sends nothing: it only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, and belongs to someone else
    except OverflowError:
        return False  # too large to be a pid
    return True
