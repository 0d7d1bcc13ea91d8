"""SNIPS end to end: `minimtl.machinery.run.train` with the default weights, three recipes, test scores and time.

  full    full fine-tuning, the default recipe (RunConfig defaults, overridable by the flags below)
  frozen  --freeze backbone: heads only (the backbone's hidden states are cached after one pass)
  lora    --lora 8: rank-8 adapters on a frozen backbone, plus the heads
Each recipe trains on ../shared/data/snips (relative to the repo root; 13084 train / 700 dev / 700 test) and
reports the test scores of its best-dev checkpoint (intent accuracy, slot entity F1, frame accuracy),
trainable parameters, training-loop seconds (sum over epochs), epoch seconds (with feature caching, dev
evaluation and saving) and the wall time of the whole `train` call (loading, encoding, test evaluation too).
For `frozen` it also times one encoder pass over train + dev, batched as the feature cache batches it, and
reports the run's epoch seconds as a multiple of that pass (the feature cache's promise: about one pass).
For `full` it prints useful training GFLOP/s (6 x non-embedding parameters x real training tokens per
second of the training loop) as a fraction of the machine's fp32 matmul GFLOP/s, measured before and after.

    python tests/benchmarks/bench_snips.py [--quick] [--only full|frozen|lora] [--epochs N] [--lr-backbone X]
                                           [--layer-decay X] [--lr-heads X] [--lr-lora X] [--batch-size N]
                                           [--seed N] [--crf] [--runs DIR]

--quick trains 1 epoch on a temporary SNIPS-format slice (first 300 train / 100 dev / 100 test sentences).
Writes tests/benchmarks/results/snips.json (snips_ONLY.json with --only, + _seedN with --seed N > 0;
.quick.json with --quick). Run it with a few seeds and compare: one run is one sample.
"""

import json
import re
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from common import (matmul_gflops, non_embedding_params, parser, setup, snips_dir, snips_ids, weights_dir,
                    write_results)
from minimtl import load_encoder
from minimtl.batching import batches
from minimtl.extensions.features import ENCODE_BATCH
from minimtl.machinery.settings import RunConfig
from minimtl.machinery.run import train

RECIPES = {"full": {}, "frozen": {"freeze": ["backbone"]}, "lora": {"lora": 8}}
OVERRIDES = ("epochs", "lr_backbone", "layer_decay", "lr_heads", "lr_lora", "batch_size", "seed", "patience")
QUICK_SLICE = {"train": 300, "dev": 100, "test": 100}


def snips_slice(source, target):
    """A SNIPS-format folder holding the first QUICK_SLICE sentences of each split."""
    for split, n in QUICK_SLICE.items():
        (target / split).mkdir(parents=True)
        for name in ("seq.in", "seq.out", "label"):
            lines = (source / split / name).read_text(encoding="utf-8").splitlines(keepends=True)[:n]
            (target / split / name).write_text("".join(lines), encoding="utf-8")
    return target


def run_recipe(name, cfg):
    lines = []

    def log(line):
        lines.append(line)
        print("\n".join(f"  [{name}] {part}" for part in str(line).splitlines()), flush=True)
    start = time.perf_counter()
    results = train(cfg, log)
    wall = time.perf_counter() - start
    table = "\n".join(str(line) for line in lines)
    trainable = int(re.search(r"^trainable\s+([\d,]+)", table, re.M).group(1).replace(",", ""))
    history = [json.loads(l) for l in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    test = results["test"]
    return {"test": {k: test[k] for k in ("label_accuracy", "entity_f1", "frame_accuracy")},
            "best_epoch": results["best_epoch"], "epochs_run": len(history), "dev": results["dev"],
            "test_all": test, "trainable_params": trainable,
            "train_seconds": sum(r["train_seconds"] for r in history),
            "epoch_seconds": sum(r["seconds"] for r in history), "wall_seconds": wall,
            "config": asdict(cfg)}


def encoder_pass_seconds(data, cfg):
    """Seconds for one inference pass of the default encoder over train + dev, as the feature cache runs it."""
    _, encoded, _, _ = snips_ids(["train", "dev"], data, cfg.max_len)
    encoder = load_encoder(weights_dir()).eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for split in encoded.values():
            for batch in batches(split, ENCODE_BATCH):
                encoder(batch.input_ids, batch.attention_mask)
    return time.perf_counter() - start


def full_speed_report(result, data, cfg, machine):
    """Useful training GFLOP/s of a full fine-tuning run, as a share of the machine's matmul speed."""
    _, encoded, _, _ = snips_ids(["train"], data, cfg.max_len)
    tokens = sum(len(ids) for ids in encoded["train"].input_ids)
    params = non_embedding_params(load_encoder(weights_dir()))
    machine.append(matmul_gflops())
    useful = 6 * params * tokens * result["epochs_run"] / result["train_seconds"] / 1e9
    result.update(train_tokens=tokens, useful_gflops=useful, matmul_gflops=machine,
                  fraction_of_machine=useful / statistics.median(machine))
    print(f"  [full] useful training GFLOP/s {useful:.1f} = {result['fraction_of_machine']:.1%} of the machine's "
          f"fp32 matmul ({', '.join(f'{g:.0f}' for g in machine)} GFLOP/s before/after)")


def main():
    p = parser(__doc__, timing=False)
    p.add_argument("--only", choices=list(RECIPES), help="run one recipe")
    for name in OVERRIDES:
        kind = float if name.startswith("lr") or name == "layer_decay" else int
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, help="default: RunConfig's")
    p.add_argument("--crf", action="store_true", help="a CRF on the tag head (results file gets _crf)")
    p.add_argument("--runs", default=None, help="keep the run directories under DIR (default: temporary)")
    args = p.parse_args()
    setup(args)
    data = snips_dir(args.data)
    overrides = {k: getattr(args, k) for k in OVERRIDES if getattr(args, k) is not None} | \
        ({"crf": True} if args.crf else {})
    if args.quick:
        overrides.setdefault("epochs", 1)
    names = [args.only] if args.only else list(RECIPES)
    results, start = {}, time.perf_counter()
    machine = [matmul_gflops()]
    with tempfile.TemporaryDirectory(prefix="bench-snips-") as tmp:
        if args.quick:
            data = snips_slice(data, Path(tmp) / "snips")
        runs = Path(args.runs) if args.runs else Path(tmp) / "runs"
        for name in names:
            cfg = RunConfig(data=[str(data)], out=str(runs / name), **{**overrides, **RECIPES[name]})
            print(f"== {name}: {', '.join(f'{k}={v}' for k, v in {**overrides, **RECIPES[name]}.items()) or 'defaults'}")
            results[name] = run_recipe(name, cfg)
            if name == "full":
                full_speed_report(results[name], data, cfg, machine)
            if name == "frozen":
                seconds = encoder_pass_seconds(data, cfg)
                results[name]["encoder_pass_seconds"] = seconds
                results[name]["epoch_seconds_per_encoder_pass"] = results[name]["epoch_seconds"] / seconds
                print(f"  [frozen] one encoder pass over train + dev: {seconds:.1f}s; the {results[name]['epochs_run']}"
                      f" epochs took {results[name]['epoch_seconds_per_encoder_pass']:.2f}x that")
    total = time.perf_counter() - start

    print(f"\n{'recipe':<7} {'trainable':>11} {'intent acc':>10} {'slot F1':>8} {'frame acc':>9} {'epochs':>6} "
          f"{'train s':>8} {'epoch s':>8} {'wall s':>7}")
    for name, r in results.items():
        t = r["test"]
        print(f"{name:<7} {r['trainable_params']:>11,} {100 * t['label_accuracy']:>10.2f} {100 * t['entity_f1']:>8.2f} "
              f"{100 * t['frame_accuracy']:>9.2f} {r['epochs_run']:>6} {r['train_seconds']:>8.1f} "
              f"{r['epoch_seconds']:>8.1f} {r['wall_seconds']:>7.1f}")
    print(f"total wall time {total:.1f}s")
    write_results("snips" + (f"_{args.only}" if args.only else "") + ("_crf" if args.crf else "")
                  + (f"_seed{args.seed}" if args.seed else ""),
                  {"data": str(args.data), "quick_slice": QUICK_SLICE if args.quick else None,
                   "total_wall_seconds": total, "recipes": results}, args)


if __name__ == "__main__":
    main()
