"""`--freeze backbone` on SNIPS: the default frozen recipe against the old linear probe, and the sweep behind it.

Rows (each one `minimtl.machinery.run.train` call on ../shared/data/snips with the default weights, --freeze backbone):
  probe       the old recipe: the last layer, [CLS] pooling, linear heads, 20 epochs (--layers 1 --pooling cls
              --sentence-head linear --token-head linear --epochs 20)
  default     the frozen recipe as it was measured: a scalar mix of all 7 hidden states, a BiLSTM in each head,
              5 epochs (the recipe trains 3 now, docs/recipes.md; bench_frozen_cost.py measures it as it is)
  sweep rows  one change from `default` each, compared on dev (see SWEEP)

    python tests/benchmarks/bench_frozen.py [--quick] [--seeds 0 1 2] [--sweep] [--data DIR]

`default` runs once per seed (`probe` with the first seed only), each with its own feature cache, and report test scores of the
best-on-dev epoch and the wall time of the whole `train` call (loading, tokenising, the cache, every epoch,
the test evaluation). They also report the cost of the cached epochs: (seconds of all epochs without the
cache build) / epochs x 20, as a multiple of one encoder pass over train + dev (timed here, as the cache
batches it). `--sweep` trains every SWEEP row once (seed 0) on one shared cache of all 7 layers (a row reading
k layers gets the top k), so its wall times leave the cache out; choose on dev. Writes
tests/benchmarks/results/frozen.json (.quick.json with --quick).
"""

import re
import statistics
import tempfile
import time
from pathlib import Path

from common import parser, setup, snips_dir, write_results
import minimtl.machinery.run as run
import minimtl.machinery.storage as storage
from minimtl.machinery.settings import RunConfig
from minimtl.extensions.features import FeatureCache
from bench_snips import encoder_pass_seconds, snips_slice

FROZEN = {"freeze": ["backbone"]}
MEASURED_EPOCHS = 5  # the frozen recipe's epochs when frozen.json was measured; every row but the probe keeps them
ROWS = {"probe": {"layers": 1, "pooling": "cls", "sentence_head": "linear", "token_head": "linear", "epochs": 20},
        "default": {"epochs": MEASURED_EPOCHS}}
SWEEP = {name: {"epochs": MEASURED_EPOCHS} | change for name, change in {
    "default": {},
    "mean-pooled": {"sentence_head": "linear"},  # what the sentence BiLSTM buys over mean pooling (the weights')
    "conv-tags": {"token_head": "conv"},  # dilated convolutions in place of the tag BiLSTM
    "conv-both": {"sentence_head": "conv", "token_head": "conv"},  # in place of both BiLSTMs
    "linear-tags": {"token_head": "linear"},  # what the tag BiLSTM buys
    "last-layer": {"layers": 1},  # what the mix buys
    "crf": {"crf": True},  # what a CRF adds to the tag BiLSTM
    "3-epochs": {"epochs": 3},  # what fewer epochs cost
}.items()}
METRICS = ("label_accuracy", "entity_f1", "frame_accuracy")


class TopLayers:
    """A view of a cache of all layers for a model that reads the top k."""

    def __init__(self, cache, k):
        self.cache, self.k = cache, k

    def hidden(self, source, split, batch):
        h = self.cache.hidden(source, split, batch)  # (B, T, 7, H)
        return h[:, :, -1] if self.k == 1 else h[:, :, -self.k:]


def run(name, cfg, log_prefix):
    lines = []

    def log(line):
        lines.append(str(line))
        print("\n".join(f"  [{log_prefix}] {part}" for part in str(line).splitlines()), flush=True)
    start = time.perf_counter()
    results = run.train(cfg, log)
    wall = time.perf_counter() - start
    text = "\n".join(lines)
    trainable = int(re.search(r"^trainable\s+([\d,]+)", text, re.M).group(1).replace(",", ""))
    cache = re.search(r"feature cache: .* once in ([\d.]+)s", text)
    epochs = [line for line in lines if line.startswith("epoch ")]
    seconds = [float(re.search(r"([\d.]+)s(  \*saved)?$", line).group(1)) for line in epochs]
    cached_epochs = sum(seconds) - (float(cache.group(1)) if cache else 0.0)
    return {"test": {k: results["test"][k] for k in METRICS}, "dev": {k: results["dev"][k] for k in METRICS},
            "best_epoch": results["best_epoch"], "epochs_run": len(epochs), "trainable_params": trainable,
            "wall_seconds": wall, "cache_seconds": float(cache.group(1)) if cache else None,
            "cached_epoch_seconds": cached_epochs, "settings": {k: v for k, v in vars(cfg).items() if k != "data"}}


def sweep(data, runs, quick, rows, save):
    """Fill `rows` with the SWEEP rows, saving after each."""
    shared = {}

    def cache(model, sources, splits, log, file=None):
        if "all" not in shared:  # the first row reads every layer: its cache serves all the others
            assert model.config.layers == len(model.bert.layers) + 1
            shared["all"] = FeatureCache(model, sources, splits, log)
        return TopLayers(shared["all"], model.config.layers)

    storage.FeatureCache = cache
    for name, settings in SWEEP.items():
        cfg = RunConfig(data=[str(data)], out=str(runs / f"sweep-{name}"), **FROZEN,
                          **settings | ({"epochs": 1} if quick else {}))
        print(f"== sweep {name}: {settings or 'the default'}", flush=True)
        rows[name] = run(name, cfg, f"sweep {name}")
        save()
    storage.FeatureCache = FeatureCache


def main():
    p = parser(__doc__, timing=False)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sweep", action="store_true", help="also run the SWEEP rows (seed 0, dev scores)")
    args = p.parse_args()
    setup(args)
    data = snips_dir(args.data)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-frozen-") as tmp:
        if args.quick:
            data = snips_slice(data, Path(tmp) / "snips")
        runs = Path(tmp) / "runs"
        save = lambda: write_results("frozen", {"data": str(args.data), "results": results}, args)  # after each row
        results["encoder_pass_seconds"] = pass_seconds = encoder_pass_seconds(data, RunConfig())
        if args.sweep:
            results["sweep"] = {}
            sweep(data, runs, args.quick, results["sweep"], save)
        for name, settings in ROWS.items():
            results[name] = []
            for seed in args.seeds if name == "default" else args.seeds[:1]:  # the probe is known: one seed
                if args.sweep and name == "default" and seed == 0:  # the sweep's first row is this run
                    results[name].append(results["sweep"]["default"])
                    continue
                cfg = RunConfig(data=[str(data)], out=str(runs / f"{name}-{seed}"), seed=seed, **FROZEN,
                                  **settings | ({"epochs": 1} if args.quick else {}))
                print(f"== {name} seed {seed}: {settings or 'the default frozen recipe'}", flush=True)
                results[name].append(run(name, cfg, f"{name} {seed}"))
                save()

    print(f"\none encoder pass over train + dev: {pass_seconds:.1f}s")
    print(f"{'row':<12} {'intent':>7} {'slot F1':>8} {'frame':>7} {'wall s':>7} {'wall / cache':>13} "
          f"{'20 cached epochs / pass':>24}")
    for name in ROWS:
        runs_ = results[name]
        med = {k: statistics.median(r["test"][k] for r in runs_) for k in METRICS}
        wall = statistics.median(r["wall_seconds"] for r in runs_)
        ratio = statistics.median(r["cached_epoch_seconds"] / r["epochs_run"] * 20 / pass_seconds for r in runs_)
        # The issue's measure: the whole run (loading, the cache, every epoch, the test split) against the cache.
        whole = statistics.median(r["wall_seconds"] / r["cache_seconds"] for r in runs_)
        results[f"{name}_median"] = {"test": med, "wall_seconds": wall, "twenty_cached_epochs_per_pass": ratio,
                                     "wall_per_cache": whole}
        print(f"{name:<12} {100 * med['label_accuracy']:>7.2f} {100 * med['entity_f1']:>8.2f} "
              f"{100 * med['frame_accuracy']:>7.2f} {wall:>7.0f} {whole:>13.2f} {ratio:>24.2f}   "
              f"(test, median of {len(runs_)})")
    for name, r in results.get("sweep", {}).items():
        d = r["dev"]
        print(f"sweep {name:<14} dev {100 * d['label_accuracy']:.2f} / {100 * d['entity_f1']:.2f} / "
              f"{100 * d['frame_accuracy']:.2f}  best epoch {r['best_epoch']}  {r['wall_seconds']:.0f}s")
    write_results("frozen", {"data": str(args.data), "results": results}, args)


if __name__ == "__main__":
    main()
