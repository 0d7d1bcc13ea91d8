"""train.py as one process of a torchrun job, instrumented for tests/test_distributed.py (not a test itself).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py TRAIN.PY ARGS...

Each process runs train.py exactly as `python train.py ARGS` would, and:
  * reports at exit, on stderr as `WRITES rank=R [...]`, every file-system change it made under the folder
    in $MINIMTL_WATCH (seen through Python's audit hooks: opens for writing, mkdir, rename, remove, link...);
  * with $MINIMTL_KILL_AT=N, rank 1 kills itself with SIGKILL at its N-th training micro-batch.
"""

import atexit
import json
import os
import runpy
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's minimtl, as for `python train.py` run from ROOT

RANK = int(os.environ["RANK"])
WATCH = os.path.abspath(os.environ["MINIMTL_WATCH"])
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
CHANGES = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.link", "os.symlink", "os.truncate", "os.chmod",
           "os.utime", "shutil.rmtree", "shutil.copyfile"}
writes = []


def watched(path):
    if isinstance(path, (str, bytes, os.PathLike)):
        path = os.path.abspath(os.fsdecode(path))
        return path == WATCH or path.startswith(WATCH + os.sep)
    return False


def audit(event, args):
    if event == "open":
        path, mode, flags = args
        writing = bool(flags & WRITE_FLAGS) if isinstance(flags, int) else any(c in (mode or "") for c in "wax+")
        if writing and watched(path):
            writes.append([event, os.fsdecode(path)])
    elif event in CHANGES:
        paths = [a for a in args if watched(a)]
        if paths:
            writes.append([event, *map(os.fsdecode, paths)])


sys.addaudithook(audit)
atexit.register(lambda: print(f"WRITES rank={RANK} {json.dumps(writes)}", file=sys.stderr, flush=True))

if RANK == 1 and os.environ.get("MINIMTL_KILL_AT"):
    import minimtl.machinery.steps as steps  # where a run's training step computes its loss

    real_loss, calls, kill_at = steps.multitask_loss, [0], int(os.environ["MINIMTL_KILL_AT"])

    def loss_then_die(*args, **kwargs):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_loss(*args, **kwargs)

    steps.multitask_loss = loss_then_die

script, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_path(script, run_name="__main__")
