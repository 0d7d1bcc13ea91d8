"""The frozen recipe at 30x the data: a 120,000-text AG News-shaped run within a bounded memory.

The full AG News corpus has 120,000 training texts; its feature cache (every layer of every token, float16) is
far larger than this machine's memory. This runs `train.py --freeze backbone` as a user would, on the shared
4,000 AG News training texts and on those texts repeated 30 times (the cost depends on the number and length
of the texts, not on their words), the same dev split for both, and reports for each: where the cache went
(the run's own log line), its size and encoding time, the seconds of the heads' epoch, the whole wall time and
the peak resident memory of the training process (getrusage of the child). Cost per text should not grow with
the data, and the peak memory must stay under 8 GB.

    python tests/benchmarks/bench_cache_scale.py [--copies 30] [--epochs 1]

Writes tests/benchmarks/results/cache_scale.json.
"""

import argparse
import csv
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, write_results

AG_NEWS = ROOT.parent / "shared" / "data" / "ag_news"


def shaped(copies, folder):
    """AG News with its training texts repeated `copies` times (dev and classes as they are)."""
    folder.mkdir(parents=True)
    with open(AG_NEWS / "train.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header = [rows[0]] if not rows[0][-1].isdigit() else []
    body = rows[len(header):]
    with open(folder / "train.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(header + body * copies)
    for name in ("dev.csv", "classes.txt"):
        shutil.copy(AG_NEWS / name, folder / name)
    return len(body) * copies


def run(data, out, epochs):
    """One train.py run: (log text, wall seconds, peak RSS in bytes of the training process)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    # --no-word-shape: as measured, before the frozen recipe read word shapes by default on cased text.
    done = subprocess.run([sys.executable, "train.py", "--data", str(data), "--freeze", "backbone", "--no-word-shape",
                           "--epochs", str(epochs), "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"train.py failed:\n{done.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far, in KiB
    if peak <= before:
        print("note: this run's peak was below an earlier child's; its own peak is at most that", file=sys.stderr)
    return done.stdout + done.stderr, wall, peak * 1024


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--copies", type=int, default=30)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="2 copies instead of --copies")
    args = p.parse_args()
    copies = 2 if args.quick else args.copies
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=ROOT.parent) as tmp:
        # Smaller first: getrusage reports the largest child so far, so each row's peak is its own.
        for name, n in (("base", 1), ("scaled", copies)):
            texts = shaped(n, Path(tmp) / name)
            print(f"== {name}: {texts:,} training texts", flush=True)
            log, wall, peak = run(Path(tmp) / name, Path(tmp) / f"{name}-run", args.epochs)
            cache = [line for line in log.splitlines() if line.startswith("feature cache:")]
            encoded = re.search(r"once in ([\d.]+)s", log)
            epochs = [float(re.search(r"([\d.]+)s(  \*saved)?$", line).group(1))
                      for line in log.splitlines() if re.match(r"epoch +\d+/", line)]
            cache_seconds = float(encoded.group(1)) if encoded else None
            heads = sum(epochs) - (cache_seconds or 0)  # the first epoch's time includes building the cache
            rows[name] = {"texts": texts, "cache_lines": cache, "cache_seconds": cache_seconds,
                          "heads_epoch_seconds": heads / len(epochs), "wall_seconds": wall, "peak_rss_bytes": peak}
            print("\n".join(cache), f"\nwall {wall:.0f}s, cache {cache_seconds}s, heads epoch {heads / len(epochs):.1f}s, "
                  f"peak RSS {peak / 2**30:.2f} GiB", flush=True)
    base, scaled = rows["base"], rows["scaled"]
    scale = scaled["texts"] / base["texts"]
    growth = {k: scaled[k] / base[k] / scale for k in ("cache_seconds", "heads_epoch_seconds", "wall_seconds")
              if base[k] and scaled[k]}
    print(f"\ncost per text, {scaled['texts']:,} texts against {base['texts']:,}: "
          + ", ".join(f"{k} x{v:.2f}" for k, v in growth.items())
          + f"; peak RSS {scaled['peak_rss_bytes'] / 2**30:.2f} GiB (goal: under 8 GB)")
    write_results("cache_scale", {"rows": rows, "per_text_growth": growth, "epochs": args.epochs}, args)


if __name__ == "__main__":
    main()
