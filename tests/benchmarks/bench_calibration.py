"""Temperature scaling on trained checkpoints: ECE on test before and after, and the proof that no prediction moves.

    python tests/benchmarks/bench_calibration.py \\
        --run snips-full /work/ckpt/snips-full ../shared/data/snips \\
        --run conll-ag-frozen /work/ckpt/conll-ag-frozen ../shared/data/conll2003 ../shared/data/ag_news

Per run (NAME, a checkpoint directory written by train.py, and the data folders it was trained on):
1. each head's temperature fitted on the dev split with `calibration.fit_temperatures`, the function training
   calls after its last epoch;
2. the test split's logits computed once; from them the expected calibration error (15 bins) of sentence labels
   and predicted entities at T = 1 and at the fitted T, per data set (`calibration.predictions`);
3. the test metrics of the predictions made from the uncalibrated logits and from the calibrated ones
   (argmax of z / T; decoding over the scaled softmax, or Viterbi over the CRF with every score divided by T),
   with the count of sentences whose label or tags differ (must be 0), and whether the uncalibrated metrics
   equal the run's results.json to the last digit.

--quick: the first 200 dev and test sentences only. The checkpoint is only read: the temperatures go into the JSON, never into the checkpoint. Goal (issue 29):
ECE <= 2% for sentence labels and <= 3% for entities. Writes tests/benchmarks/results/calibration.json.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from common import setup, write_results
from minimtl.extensions.calibration import collect, expected_calibration_error, fit_temperatures, predictions
from minimtl.bio import viterbi
from minimtl.evaluation import head_outputs, score
from minimtl.batching import encode_split
from minimtl.machinery.checkpoint import load_with_tokenizer
from minimtl.machinery.data import LabelVocab
from minimtl.machinery.rundir import is_finished
from minimtl.machinery.sources import encode_examples, load_sources

GOALS = {"label": 0.02, "entity": 0.03}
QUICK = 200  # --quick: the first 200 dev and test sentences of each data set


def sources_of(checkpoint, data, aligner, meta, model, n=None):
    """The data folders as training's sources, their dev and test splits (the first `n` sentences of each
    when given) encoded with the checkpoint's own vocabularies and word shapes (as infer.py --evaluate does),
    every sentence whole up to the model's position limit. (A run trained with --context would need its
    documents too: this script refuses it.)"""
    if meta.get("context"):
        raise SystemExit(f"error: {checkpoint} was trained with --context, which this script does not encode")
    sources = load_sources(data)
    labels = LabelVocab(meta["labels"]) if meta.get("labels") else None
    tags = LabelVocab(meta["tags"]) if meta.get("tags") else None
    trained_on = meta.get("sources") or {}
    for s in sources:
        s.labels = labels if s.splits.has_labels else None
        s.tags = tags if s.splits.has_tags else None
        if trained_on and s.name not in trained_on:
            raise SystemExit(f"error: {checkpoint} was trained on {sorted(trained_on)}, not on {s.name}")
        for split in ("dev", "test"):
            examples = getattr(s.splits, split)
            if examples is not None:
                examples = examples[:n]
                setattr(s.splits, split, examples)
                s.ids[split] = encode_examples(aligner, examples, s.labels, s.tags, model.bert.config.max_tokens,
                                            word_shapes=bool(model.word_shapes))
    return sources


def decoded(model, logits, examples, label_names, temperatures):
    """(label names, tag names per word) predicted from the collected logits under the temperatures: the
    argmax of z / T, and the best path of the scaled scores (a word past the position limit is "O", as in
    evaluation.predict). `examples` in the order of the logits' rows."""
    labels, tags = None, None
    if logits.cls is not None:
        labels = [label_names[k] for k in (logits.cls / temperatures.get("cls", 1.0)).argmax(-1).tolist()]
    if logits.tag_batches:
        head, t = model.ner_head, temperatures.get("ner", 1.0)
        paths = []
        for emissions, lengths, _ in logits.tag_batches:
            if head.crf is None:  # constrained decoding of softmax(e / T)
                paths += head.decode(emissions / t, lengths)
            else:  # Viterbi over the CRF with every score divided by T
                paths += viterbi(emissions.float() / t, lengths, *head.crf._scores(float("-inf"), torch.float32, t))
        tags = [[head.tags[k] for k in path] + ["O"] * (len(ex.words) - len(path)) for path, ex in zip(paths, examples)]
    return labels, tags


def run(name, checkpoint, data, n=None):
    started = time.perf_counter()
    model, meta, aligner = load_with_tokenizer(checkpoint)
    sources = sources_of(checkpoint, data, aligner, meta, model, n)
    fit_start = time.perf_counter()
    temperatures = fit_temperatures(model, sources, "dev")
    fit_seconds = time.perf_counter() - fit_start
    row = {"checkpoint": str(checkpoint), "data": [str(d) for d in data], "temperature": temperatures,
           "heads": meta["heads"], "best_epoch": meta.get("epoch"),
           "epochs": meta.get("recipe", {}).get("epochs"), "run_finished": is_finished(checkpoint),
           "fit_seconds": round(fit_seconds, 1), "sources": {}}
    saved = Path(checkpoint) / "results.json"
    saved_test = json.loads(saved.read_text())["test"] if saved.is_file() else None
    for s in sources:
        if s.splits.test is None:
            continue
        logits = collect(s, "test", head_outputs(model, s, "test"))
        examples = [s.splits.test[i] for i in logits.order]  # in the order of the logits' rows
        before, after = predictions(model, logits, {}), predictions(model, logits, temperatures)
        entry = {}
        for kind in before:
            entry[f"{kind}_ece_before"] = expected_calibration_error(*before[kind])
            entry[f"{kind}_ece_after"] = expected_calibration_error(*after[kind])
            entry[f"{kind}_count"] = len(before[kind][0])
            entry[f"{kind}_goal_met"] = entry[f"{kind}_ece_after"] <= GOALS[kind]
        (l0, t0), (l1, t1) = (decoded(model, logits, examples, meta.get("labels"), temps)
                              for temps in ({}, temperatures))
        entry["test_before"] = _headline(score(examples, l0, t0))
        entry["test_after"] = _headline(score(examples, l1, t1))
        entry["predictions_changed"] = sum(bool((l0 and l0[i] != l1[i]) or (t0 and t0[i] != t1[i]))
                                           for i in range(len(examples)))
        entry["metrics_identical"] = entry["test_before"] == entry["test_after"]
        if saved_test is not None and n is None:
            prefix = f"{s.name}/" if len(sources) > 1 else ""
            entry["equals_results_json"] = all(saved_test.get(prefix + k) == v for k, v in entry["test_before"].items())
        row["sources"][s.name] = entry
        print(f"{name} {s.name}: T {temperatures}  " + "  ".join(
            f"{k} {100 * v:.2f}%" for k, v in entry.items() if "_ece_" in k)
            + f"  test {entry['test_before']} -> {entry['test_after']}  changed {entry['predictions_changed']}",
            flush=True)
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def _headline(scores):
    return {k: v for k, v in scores.items() if k in ("label_accuracy", "entity_f1", "frame_accuracy")}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"smoke mode: the first {QUICK} dev and test sentences")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--run", nargs="+", action="append", required=True, metavar="NAME CHECKPOINT DATA",
                   help="a name, a checkpoint directory and the data folders it was trained on (repeatable)")
    args = p.parse_args()
    setup(args)
    runs = {}
    for name, checkpoint, *data in args.run:
        if not data:
            p.error(f"--run {name}: give the checkpoint and its data folders")
        runs[name] = run(name, Path(checkpoint), [Path(d) for d in data], QUICK if args.quick else None)
    write_results("calibration", {"goals": GOALS, "runs": runs}, args)


if __name__ == "__main__":
    main()
