"""What the frozen recipe's heads cost, as process CPU time against the cache's own, and what they score.

Each row is one `minimtl.machinery.run.train` call on SNIPS with --freeze backbone and the row's settings; the
feature cache is built once, by the first row, and shared. Run it single-threaded (OMP_NUM_THREADS=1): the
process CPU time of each heads epoch (`train_epoch`) and of each dev evaluation is then divided by the CPU
time of building the cache. Unlike wall time, CPU time barely moves when other work loads the machine, so
this ranks heads on a busy machine too; the issue's own goal (the whole run against the cache, in wall time)
needs a quiet one (bench_frozen.py).

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_heads_cpu.py DATA 'ROWS'

ROWS: a JSON list of [name, RunConfig settings, module constants of minimtl.model to set], e.g.
'[["conv", {"sentence_head": "linear", "token_head": "conv"}, {"CONV_WIDTH": 128}]]'. Prints one line per row.
"""

import json
import sys
import tempfile
import time

import minimtl.machinery.run as run
import minimtl.extensions.heads as M
import minimtl.machinery.storage as storage
from minimtl.machinery.settings import RunConfig
from minimtl.extensions.features import FeatureCache

METRICS = ("label_accuracy", "entity_f1", "frame_accuracy")


def main():
    data, rows = sys.argv[1], json.loads(sys.argv[2])
    shared, epochs, evals = {}, [], []

    def cache(model, sources, splits, log, file=None):
        if "cache" not in shared:
            start = time.process_time()
            shared["cache"] = FeatureCache(model, sources, splits, log)
            shared["cpu"] = time.process_time() - start
        return shared["cache"]

    def timed(function, into):
        def wrapper(*args, **kwargs):
            start = time.process_time()
            result = function(*args, **kwargs)
            into.append(time.process_time() - start)
            return result
        return wrapper

    storage.FeatureCache = cache
    run.train_epoch = timed(run.train_epoch, epochs)
    run.evaluate_sources = timed(run.evaluate_sources, evals)
    for name, settings, constants in rows:
        for key, value in constants.items():
            setattr(M, key, value)
        epochs.clear()
        evals.clear()
        cfg = RunConfig(data=[data], out=tempfile.mkdtemp() + "/run", freeze=["backbone"], **settings)
        results = run.train(cfg, lambda line: None)
        c = shared["cpu"]
        print(f"{name}: cache cpu {c:.1f}s; epoch cpu/cache {[round(x / c, 3) for x in epochs]}; "
              f"dev evals/cache {[round(x / c, 3) for x in evals]}; best {results['best_epoch']} "
              f"dev {[round(100 * results['dev'][k], 2) for k in METRICS]} "
              f"test {[round(100 * results['test'][k], 2) for k in METRICS]}", flush=True)


if __name__ == "__main__":
    main()
