"""How many threads torch computes with: the cores other processes leave idle, looked at before each phase.

torch splits every large operation over its threads, and each operation ends when its slowest thread ends.
When another process keeps a core busy, one of two threads shares that core with it and the other waits for
it at every operation: on this project's 2-core machine a 2-thread run then fell to a fraction of what one
thread does alone, while a single thread beside the same load kept its speed (docs/benchmarks.md, "Threads
under load"; `python tests/benchmarks/bench_threads.py`). So before the feature cache and before each epoch, a
run looks at how much of the machine other processes of its own priority or higher use (0.2 s of /proc/stat,
while this process sleeps) and computes with the cores they leave, at least one.

`--threads N` fixes the count, and so does OMP_NUM_THREADS in the environment (torchrun sets it to 1 for each
of its processes), which is then torch's own setting. The count changes how a product's sums are split, and so
the last bits of a result: a resumed run equals the uninterrupted one bit for bit when both computed with the
same counts, which a fixed count guarantees.
"""

import os
import time

import torch


def usable_cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


SAMPLE_SECONDS = 0.2


def cpu_times():
    """(free, total) jiffies of all CPUs together since boot, or None where /proc/stat is not readable. Free:
    idle, waiting for a disk, or running a process of lower priority (positive nice), which the scheduler
    makes give its core to ours: beside a `nice 19` busy process two threads kept their speed."""
    try:
        with open("/proc/stat") as f:
            user, nice, system, idle, iowait, *rest = (int(v) for v in f.readline().split()[1:9])
    except (OSError, ValueError):
        return None
    return idle + iowait + nice, user + nice + system + idle + iowait + sum(rest)


def idle_cores(seconds=SAMPLE_SECONDS):
    """How many of the machine's cores were free for this process over the next `seconds` (it sleeps meanwhile),
    or None where the system does not say."""
    before = cpu_times()
    time.sleep(seconds)
    after = cpu_times()
    if before is None or after is None or after[1] == before[1]:
        return None
    return os.cpu_count() * (after[0] - before[0]) / (after[1] - before[1])


def choose_threads(cfg, phase, log, before=None):
    """Set torch's thread count for `phase` ("epoch 3", say) and return it; says so when it changes from `before`.
    Fixed by --threads or OMP_NUM_THREADS; otherwise the idle cores this process may run on, at least one."""
    if cfg.threads is not None:
        threads = cfg.threads
    elif "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    else:
        allowed = usable_cpus()
        idle = idle_cores()
        threads = allowed if idle is None else max(1, min(allowed, round(idle)))
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    if threads != before:
        why = "--threads" if cfg.threads is not None else "the cores other processes left idle"
        log(f"{phase}: {threads} thread{'s' * (threads != 1)} ({why})")
    return threads
