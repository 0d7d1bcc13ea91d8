"""Where a frozen backbone's feature cache lives: in memory, in a nameless file beside the run, or nowhere.

Its size is known before it is built (FeatureCache.size), so a run never starts what would run the machine
out of memory or fill its disk (`cache_place`), and says which it chose and why.
"""

import os
import shutil
from pathlib import Path

from ..guards.errors import UserError
from ..extensions.features import FeatureCache


def features_for_epoch(model, sources, features, log=print, file=None, pace=lambda batches: batches):
    """The feature cache while the whole encoder is frozen (built once; in `file` when given, else in memory,
    its batches handed out by `pace`), None as soon as any of it trains.

    Under torchrun every process encodes the whole of both splits. Each one trains on different sentences
    every epoch (the shards are re-drawn from each epoch's order), so caching only one epoch's share would not
    do; and encoding on rank 0 and broadcasting would leave the others idle for the same time, then send every
    hidden state. With a GPU per process, all of them encode at once in the time one would take alone.
    """
    if not encoder_frozen(model):
        return None
    return features or FeatureCache(model, sources, ("train", "dev"), log, file=file, pace=pace)


def cache_place(model, sources, cfg, max_len, world, log):
    """Where the frozen backbone's feature cache is kept: "memory", "disk" or "off" (not built: the frozen
    encoder runs in every step, under no_grad, which costs time instead of space). Never start what would run
    the machine out of memory or fill its disk: the cache's size is known exactly before it is built
    (FeatureCache.size), and with --feature-cache auto it goes in memory within --cache-memory (default: half
    of the memory available now), else on disk within half of the free space beside --out, else nowhere.
    Each of the job's processes builds its own cache, so they share both budgets. Says which, and why."""
    size = FeatureCache.size(model, sources, ("train", "dev"))
    budget = cfg.cache_memory * 2**30 if cfg.cache_memory is not None else available_memory() / (2 * world)
    one_batch = cfg.batch_size * max_len * FeatureCache.token_bytes(model)
    if cfg.cache_memory is not None and budget < one_batch:
        raise UserError(f"--cache-memory {cfg.cache_memory:g} GiB cannot hold even one batch of features "
                        f"({one_batch / 2**20:,.1f} MiB for --batch-size {cfg.batch_size} at --max-len {max_len})")
    if cfg.feature_cache == "auto" and size <= budget:
        return "memory"  # the cache's own line says so when it is built
    disk = shutil.disk_usage(cache_dir(Path(cfg.out))).free / (2 * world)
    mib = lambda n: f"{n / 2**20:,.1f} MiB"
    if cfg.feature_cache == "off":
        place, why = "off", "--feature-cache off"
    elif size <= disk:
        place, why = "disk", ("--feature-cache disk" if cfg.feature_cache == "disk" else
                              f"over the memory budget of {mib(budget)} (--cache-memory)") + \
            f"; within half of the {mib(2 * world * disk)} free beside {cfg.out}"
    elif cfg.feature_cache == "disk":
        raise UserError(f"--feature-cache disk: the cache takes {mib(size)}, more than half of the "
                        f"{mib(2 * world * disk)} free beside {cfg.out}")
    else:
        place, why = "off", f"over the memory budget of {mib(budget)} and half of the free disk space ({mib(disk)})"
    log(f"feature cache: {mib(size)}, "
        + ("kept on disk" if place == "disk" else "not built: the frozen encoder runs in every step") + f" ({why})")
    return place


def cache_dir(out):
    """Where a cache file goes: beside the run directory, on the disk the user chose for the run (not in /tmp,
    which is often memory); the nearest folder that exists, as the run directory's may not yet."""
    return next(p for p in out.resolve().parents if p.is_dir())


def available_memory():
    """Bytes the kernel says it can give without swapping (MemAvailable), or the free pages where it says none."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def encoder_frozen(model):
    """Whether nothing in the encoder trains now (adapters included): it is then a fixed function."""
    return not any(p.requires_grad for p in model.bert.parameters())
