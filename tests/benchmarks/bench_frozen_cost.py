"""What a whole frozen-backbone run costs against its own feature cache, and what it scores: `train.py` as a
user runs it, once per seed, one after another.

    python tests/benchmarks/bench_frozen_cost.py NAME [--seeds 0 1 2] [--keep DIR] -- TRAIN.PY ARGUMENTS

e.g. `python tests/benchmarks/bench_frozen_cost.py snips --seeds 0 1 2 -- --data ../shared/data/snips
--freeze backbone`. Each seed is one `python train.py ARGUMENTS --seed N --out DIR/NAME-sN` process; its wall
time is that of the whole process (start-up, loading, tokenising, the cache, every epoch, the test split,
calibration, every save), and the cache's own time is what its log line says ("encoded ... once in X s"). The
ratio of the two is the issue's goal; it needs a quiet machine, since both are wall times. The peak RSS is
the process's own (wait4). Test and dev scores and the ECE come from the run's results.json. Writes
tests/benchmarks/results/frozen_cost_NAME.json.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, RESULTS, machine_info

CACHE_LINE = re.compile(r"encoded \d+ sentences once in ([\d.]+)s")
EPOCH_LINE = re.compile(r"^epoch +\d+/\d+ .* ([\d.]+)s(  \*saved)?$", re.M)


def run(arguments, seed, out):
    command = [sys.executable, "train.py", *arguments, "--seed", str(seed), "--out", str(out)]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"error: seed {seed} failed:\n{log[-3000:]}")
    cache = float(CACHE_LINE.search(log).group(1))
    results = json.loads((out / "results.json").read_text())
    threads = re.findall(r"(\d+) threads? \(", log)
    return {"seed": seed, "wall_seconds": round(wall, 2), "cache_seconds": cache,
            "wall_per_cache": round(wall / cache, 3), "peak_rss_mib": round(usage.ru_maxrss / 1024),
            "epoch_seconds": [float(s) for s, _ in EPOCH_LINE.findall(log)], "threads": threads,
            "best_epoch": results["best_epoch"], "dev": results["dev"], "test": results["test"],
            "calibration": results.get("calibration")}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--keep", help="keep the runs under this folder (default: a temporary one, removed)")
    if "--" not in sys.argv:
        p.error("give train.py's arguments after --")
    split = sys.argv.index("--")
    args, arguments = p.parse_args(sys.argv[1:split]), sys.argv[split + 1:]
    with tempfile.TemporaryDirectory() as scratch:
        where = Path(args.keep or scratch)
        rows = []
        for seed in args.seeds:
            rows.append(run(arguments, seed, where / f"{args.name}-s{seed}"))
            r = rows[-1]
            print(f"seed {seed}: {r['wall_seconds']:.1f}s wall, cache {r['cache_seconds']:.1f}s, "
                  f"{r['wall_per_cache']:.2f}x; epochs {r['epoch_seconds']}; test "
                  f"{ {k: round(100 * v, 2) for k, v in r['test'].items() if '/' not in k and 'support' not in k} }",
                  flush=True)
    record = {"benchmark": "frozen_cost", "command": "python train.py " + " ".join(arguments) + " --seed N",
              "machine": machine_info(), "rows": rows,
              "median_wall_per_cache": statistics.median(r["wall_per_cache"] for r in rows)}
    path = RESULTS / f"frozen_cost_{args.name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"median whole run / cache: {record['median_wall_per_cache']:.2f}x; wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
