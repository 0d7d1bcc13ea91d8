"""One process against two (torchrun, gloo) on the CPU, with the same global batch: throughput and agreement.

Rows (each a `train.py` job in a subprocess, default weights all-MiniLM-L6-v2, the first --train training
sentences of the demo data and its whole dev and test splits unless --data):
  full     full fine-tuning, 1 epoch, global batch 32
  frozen   --freeze backbone, 3 epochs, the same batches: the feature cache (every process encodes both
           splits) and the heads-only epochs
Contenders, in turn within each row:
  one_process          python train.py --batch-size 32                 torch's default threads (one per core)
  one_process_1thread  the same with OMP_NUM_THREADS=1
  two_processes        torchrun --standalone --nproc_per_node 2 train.py --batch-size 16   (1 thread each)

    python tests/benchmarks/bench_ddp.py [--quick] [--only full|frozen] [--train N] [--data DIR]

Reported per job: training sentences/s of each epoch (whole job: all processes together), feature-cache
seconds, wall seconds of the whole command (start-up, data, training, dev and test evaluation, saves), and the
dev / test scores. On a machine with as many cores as processes and no accelerator, the point of this
comparison is that two processes train correctly (scores alike: dropout draws differ, so they are not
equal), not speed: N processes on N cores do the same arithmetic as one process with N threads, plus the
gradient exchange. --quick: --train 100. Writes tests/benchmarks/results/ddp.json (ddp.quick.json with --quick).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, parser, write_results
from minimtl.machinery.settings import DEMO_DATA

# --no-word-shape: as measured, before the frozen recipe read word shapes by default on cased text (the demo's).
ROWS = {"full": ["--epochs", "1"], "frozen": ["--freeze", "backbone", "--no-word-shape", "--epochs", "3",
                                              "--patience", "0"]}
GLOBAL_BATCH = 32
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def first_sentences(data, n, target):
    """A copy of a JSON-lines data folder whose training split is cut to its first n sentences."""
    target.mkdir()
    for f in Path(data).iterdir():
        lines = f.read_text(encoding="utf-8").splitlines(keepends=True)
        (target / f.name).write_text("".join(lines[:n] if f.stem == "train" else lines), encoding="utf-8")
    return target


def job(command, out, threads=None):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | \
        ({"OMP_NUM_THREADS": str(threads)} if threads else {})
    start = time.perf_counter()
    done = subprocess.run(command + ["--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(command)} failed:\n{done.stderr[-3000:]}")
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    cache = re.search(r"feature cache: .* in ([0-9.]+)s", done.stdout)
    results = json.loads((out / "results.json").read_text())
    return {"command": " ".join(command[command.index("train.py"):]), "wall_seconds": round(wall, 1),
            "sentences_per_second": [round(e["sentences_per_second"], 1) for e in epochs],
            "train_seconds": [round(e["train_seconds"], 2) for e in epochs],
            "loss": [round(e["loss"], 4) for e in epochs],
            "feature_cache_seconds": float(cache[1]) if cache else None,
            "dev": results["dev"], "test": results["test"]}


def main():
    p = parser(__doc__, timing=False)
    p.add_argument("--only", choices=tuple(ROWS), nargs="+", default=list(ROWS))
    p.add_argument("--train", type=int, default=400, help="training sentences (default 400; 100 with --quick)")
    p.set_defaults(data=DEMO_DATA)
    args = p.parse_args()
    n_train = 100 if args.quick else args.train
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = first_sentences(args.data, n_train, Path(tmp) / "data")
        for name in args.only:
            common = ["train.py", "--data", str(data), "--device", "cpu", *ROWS[name]]
            one = [sys.executable, *common, "--batch-size", str(GLOBAL_BATCH)]
            two = [*TORCHRUN, *common, "--batch-size", str(GLOBAL_BATCH // 2)]
            rows[name] = {"one_process": job(one, Path(tmp) / f"{name}-1"),
                          "one_process_1thread": job(one, Path(tmp) / f"{name}-1t", threads=1),
                          "two_processes": job(two, Path(tmp) / f"{name}-2")}
            for k, v in rows[name].items():
                print(f"{name:7} {k:14} {v['sentences_per_second']} sent/s  cache {v['feature_cache_seconds']}  "
                      f"wall {v['wall_seconds']} s  dev {v['dev']}", flush=True)
    write_results("ddp", {"data": str(args.data), "train_sentences": n_train, "global_batch": GLOBAL_BATCH,
                          "rows": rows}, args)


if __name__ == "__main__":
    main()
