"""Inference: sentences/s of float32, int8 and bf16 (infer.py --precision) and of a transformers loop; what
int8 and bf16 change in the test scores and in the predictions; and how long `infer.py "text"` takes to start.

    python tests/benchmarks/bench_inference.py --checkpoint RUN [--score RUN DATA]... [--thread-counts 1,2]
                                               [--repeats N] [--startup-pairs N] [--candidates] [--quick]

Throughput: the same 2,048 SNIPS sentences for every contender (the test, dev and train splits of --data in
that order, words joined by spaces, the first 2,048), in one process, alternating contender by contender for
--repeats rounds per thread count (torch.set_num_threads); medians of sentences/s, and of each round's ratio
to float32. Our rows run what `infer.py --file`
runs, less the printing: `predict_stream` over the texts with the Predictor of `load_predictor(RUN,
precision=...)`, then `format_prediction` of each. bf16 only on a CPU with native bf16 (otherwise the row
is skipped, saying why). The peer ("transformers"): BertTokenizerFast and BertModel loaded by transformers
from the same checkpoint directory, batches of 32 texts in file order, and our own head modules applied to
its hidden states with an arg-max per sentence and per sub-token; it does no word alignment, windowing,
BIO decoding or span building, so it does less than our rows do.

Agreement: the share of sentence labels and of word tags that int8 and bf16 predict exactly as float32 does,
on those 2,048 sentences and on each --score data set; and, per --score RUN DATA (`infer.py --evaluate`),
every test metric under each precision and its difference from float32 in points.

Start-up: pairs of processes, `python infer.py --checkpoint RUN "Alice went to Paris."` then `python -c
"import torch"`, --startup-pairs times; the median of the per-pair differences and ratios (pairing keeps the
comparison fair while the machine's load drifts).

--candidates adds the int8 implementations weighed for minimtl/precision.py, on the encoder alone (batches of
32 of the same sentences, one thread): float32, precision.Int8Linear (torch._int_mm),
torch.ao.quantization.quantize_dynamic per channel and per tensor, and torchao's
Int8DynamicActivationInt8WeightConfig when torchao can be imported (it is not a dependency).

The machine may be shared: absolute sentences/s move with its load; the ratios between contenders measured in
the same rounds, and the paired start-up figures, are what to compare. Writes
tests/benchmarks/results/inference.json (inference.quick.json with --quick: 128 sentences, 2 rounds).
"""

import copy
import statistics
import subprocess
import sys
import time
import warnings

import torch
import torch.nn as nn

from common import (ROOT, alternate, bf16_skip_reason, machine_info, median, parser, quiet_transformers, setup,
                    snips_dir, write_results)
import minimtl.machinery.report as report_module
from minimtl import evaluation
from minimtl.machinery.predictor import format_prediction
from minimtl.machinery.checkpoint import load_checkpoint, load_predictor
from minimtl.machinery.data import load_data
from minimtl.machinery.report import evaluate_file
from minimtl.machinery.streaming import predict_stream
from minimtl.extensions.precision import quantize_linears

N_SENTENCES = 2048
PEER_BATCH = 32
STARTUP_TEXT = "Alice went to Paris."
HEADLINE = ("label_accuracy", "entity_f1", "entity_precision", "entity_recall", "token_accuracy", "frame_accuracy")


def snips_texts(data, n):
    splits = load_data(snips_dir(data))
    return [" ".join(ex.words) for split in (splits.test, splits.dev, splits.train) for ex in split][:n]


# --- throughput ----------------------------------------------------------------------------------------

class Peer:
    """transformers' tokenizer and BertModel from the checkpoint directory, our heads on its hidden states."""

    def __init__(self, checkpoint):
        transformers = quiet_transformers()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
        self.bert = transformers.BertModel.from_pretrained(checkpoint, add_pooling_layer=False).eval()
        self.heads, self.meta = load_checkpoint(checkpoint)  # our model: only its heads are used
        self.max_len = self.meta.get("max_len") or 512

    @torch.inference_mode()
    def predict(self, texts):
        """(sentence label ids, per-sub-token tag ids) of every text, batches of PEER_BATCH in file order."""
        out, k = [], self.heads.config.layers
        for i in range(0, len(texts), PEER_BATCH):
            enc = self.tokenizer(texts[i : i + PEER_BATCH], padding=True, truncation=True, max_length=self.max_len,
                                 return_tensors="pt")
            result = self.bert(**enc, output_hidden_states=k > 1)
            hidden = result.last_hidden_state if k == 1 else torch.stack(result.hidden_states[-k:], dim=2)
            mask = enc["attention_mask"]
            labels = self.heads.cls_head(hidden, mask).argmax(-1) if self.heads.cls_head is not None else None
            tags = self.heads.ner_head(hidden, mask).argmax(-1) if self.heads.ner_head is not None else None
            for row in range(len(mask)):
                out.append((None if labels is None else int(labels[row]),
                            None if tags is None else tags[row, : int(mask[row].sum())].tolist()))
        return out


def throughput(args, texts, precisions, skipped):
    predictors = {p: load_predictor(args.checkpoint, precision=p) for p in precisions}
    peer = Peer(args.checkpoint)
    predictions = {}

    def ours(precision):
        def run():
            start = time.perf_counter()
            preds = list(predict_stream(predictors[precision], texts))
            for p in preds:
                format_prediction(p)
            seconds = time.perf_counter() - start
            predictions[precision] = preds
            return len(texts) / seconds
        return run

    def theirs():
        start = time.perf_counter()
        predictions["transformers"] = peer.predict(texts)
        return len(texts) / (time.perf_counter() - start)

    contenders = {**{p: ours(p) for p in precisions}, "transformers": theirs}
    rows = {}
    for threads in args.thread_counts:
        torch.set_num_threads(threads)
        for fn in contenders.values():  # warm-up: first-call allocations, oneDNN's kernel choice
            fn()
        print(f"{len(texts)} sentences, {threads} thread{'s' * (threads > 1)}, {args.repeats} rounds "
              f"(sentences/s):", flush=True)
        values = alternate(contenders, args.repeats)
        rows[str(threads)] = {name: {"sentences_per_s": median(v), "vs_fp32": paired(v, values["fp32"]), "all": v}
                              for name, v in values.items()}
        if skipped:
            rows[str(threads)]["bf16"] = {"skipped": skipped}
        for name, row in rows[str(threads)].items():
            print(f"  {name:<13} " + (f"{row['sentences_per_s']:8.1f}  x{row['vs_fp32']:.2f} of fp32 (paired)"
                                      if "skipped" not in row else row["skipped"]))
    reference = predictions["fp32"]
    agreement = {p: agree(reference, predictions[p]) for p in precisions if p != "fp32"}
    label_names = peer.meta.get("labels")
    if label_names:  # the peer computes the same model: its sentence labels should be ours
        same = sum(label_names[lab] == ours_pred.label
                   for (lab, _), ours_pred in zip(predictions["transformers"], reference))
        agreement["transformers_labels_vs_fp32"] = same / len(texts)
    return rows, agreement


def paired(values, base):
    """The median over rounds of values[r] / base[r]: each ratio compares runs a few seconds apart, so a load
    change between rounds moves both sides of it."""
    return median([v / b for v, b in zip(values, base)])


def agree(reference, predictions):
    """Shares of labels and of word tags in `predictions` equal to `reference` (inference.Prediction lists)."""
    out = {}
    if reference[0].label is not None:
        out["labels_identical"] = sum(a.label == b.label for a, b in zip(reference, predictions)) / len(reference)
    if reference[0].tags is not None:
        pairs = [(x, y) for a, b in zip(reference, predictions) for x, y in zip(a.tags, b.tags)]
        out["tags_identical"] = sum(x == y for x, y in pairs) / len(pairs)
    return out


# --- scores ----------------------------------------------------------------------------------------------

def scores(checkpoint, data, precisions):
    """Per precision: `infer.py --evaluate` scores, and the predictions it scored (read where evaluate_file
    calls evaluation.predict, so that they are exactly the scored ones)."""
    seen = {}

    def capture(*a, **k):
        seen["last"] = evaluation.predict(*a, **k)
        return seen["last"]
    report_module.predict = capture
    try:
        out = {}
        for precision in precisions:
            start = time.perf_counter()
            report = evaluate_file(checkpoint, data, None, precision)
            out[precision] = {"scores": report.scores, "predictions": seen.pop("last"),
                              "seconds": time.perf_counter() - start, "sentences": report.sentences}
            print(f"  {checkpoint} on {data}, {precision}: " + "  ".join(
                f"{k} {100 * report.scores[k]:.2f}" for k in HEADLINE if k in report.scores), flush=True)
        return out
    finally:
        report_module.predict = evaluation.predict


def score_deltas(runs, precisions):
    rows = []
    for checkpoint, data in runs:
        result = scores(checkpoint, data, precisions)
        fp32 = result["fp32"]
        row = {"checkpoint": checkpoint, "data": data, "sentences": fp32["sentences"],
               "fp32": {k: v for k, v in fp32["scores"].items() if k in HEADLINE}}
        for precision in precisions[1:]:
            s = result[precision]["scores"]
            delta = {k: 100 * (s[k] - fp32["scores"][k]) for k in HEADLINE if k in s}
            labels, tags = result[precision]["predictions"]
            ref_labels, ref_tags = fp32["predictions"]
            same = {}
            if labels is not None:
                same["labels_identical"] = sum(a == b for a, b in zip(labels, ref_labels)) / len(labels)
            if tags is not None:
                pairs = [(x, y) for a, b in zip(tags, ref_tags) for x, y in zip(a, b)]
                same["tags_identical"] = sum(x == y for x, y in pairs) / len(pairs)
            per_type = {k: 100 * (s[k] - fp32["scores"][k]) for k in s if k.startswith("entity_f1/")}
            row[precision] = {"delta_points": delta, "worst_delta_points": min(delta.values()),
                              "worst_per_type_f1_delta_points": min(per_type.values(), default=None), **same}
            print(f"  {precision} - fp32: " + "  ".join(f"{k} {v:+.2f}" for k, v in delta.items()) +
                  "  identical: " + "  ".join(f"{k} {v:.4%}" for k, v in same.items()), flush=True)
        rows.append(row)
    return rows


# --- start-up --------------------------------------------------------------------------------------------

def startup(checkpoint, pairs):
    commands = {"infer": [sys.executable, str(ROOT / "infer.py"), "--checkpoint", str(checkpoint), STARTUP_TEXT],
                "import_torch": [sys.executable, "-c", "import torch"]}

    def run(command):
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start
    for command in commands.values():
        run(command)  # warm-up: the files in the page cache
    seconds = {name: [] for name in commands}
    for i in range(pairs):
        for name, command in commands.items():
            seconds[name].append(run(command))
        print(f"  pair {i + 1}/{pairs}: infer {seconds['infer'][-1]:.2f} s, import torch "
              f"{seconds['import_torch'][-1]:.2f} s", flush=True)
    diffs = [a - b for a, b in zip(seconds["infer"], seconds["import_torch"])]
    ratios = [a / b for a, b in zip(seconds["infer"], seconds["import_torch"])]
    return {"command": " ".join(commands["infer"][1:]), "baseline": 'python -c "import torch"',
            "median_extra_s": median(diffs), "median_ratio": median(ratios),
            "infer_s": seconds["infer"], "import_torch_s": seconds["import_torch"]}


# --- int8 candidates (--candidates) ----------------------------------------------------------------------

def candidates(args, texts):
    """Encoder-only sentences/s of each int8 implementation, one thread, alternating; the largest deviation of
    its last hidden states from float32's."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    torch.set_num_threads(1)
    predictor = load_predictor(args.checkpoint)
    encoder = predictor.model.bert
    batches = []
    for i in range(0, len(texts), PEER_BATCH):
        from minimtl.batching import attention_mask, pad
        from minimtl.tokenization import split_text
        from minimtl.extensions.context import windows
        rows = [windows(predictor.tokenizer, [w.text for w in split_text(predictor.tokenizer, t)], predictor.max_len,
                        predictor.stride)[0][1].input_ids for t in texts[i : i + PEER_BATCH]]
        batches.append((pad(rows, predictor.tokenizer.pad_id), attention_mask(rows)))
    models = {"fp32": encoder}
    int8 = copy.deepcopy(encoder)
    quantize_linears(int8)
    models["Int8Linear (torch._int_mm)"] = int8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation notice
        for name, qconfig in (("per channel", per_channel_dynamic_qconfig), ("per tensor", default_dynamic_qconfig)):
            models[f"quantize_dynamic {name}"] = quantize_dynamic(copy.deepcopy(encoder), {nn.Linear: qconfig},
                                                                  dtype=torch.qint8)
    skipped = {}
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
        model = copy.deepcopy(encoder)
        quantize_(model, Int8DynamicActivationInt8WeightConfig())
        models["torchao Int8DynamicActivationInt8WeightConfig"] = model
    except ImportError as e:
        skipped["torchao"] = f"not importable ({e}): not a dependency; pip install torchao to include it"
        print("  torchao row skipped:", skipped["torchao"])

    @torch.inference_mode()
    def forward(model):
        return [model(ids, mask) for ids, mask in batches]
    reference = forward(encoder)
    deviation = {name: max(float((a - b).abs().max()) for a, b in zip(forward(m), reference))
                 for name, m in models.items()}

    def timer(model):
        def run():
            start = time.perf_counter()
            forward(model)
            return len(texts) / (time.perf_counter() - start)
        return run
    print(f"int8 candidates: the encoder alone, {len(texts)} sentences, 1 thread (sentences/s):", flush=True)
    values = alternate({name: timer(m) for name, m in models.items()}, args.repeats)
    rows = {name: {"sentences_per_s": median(v), "vs_fp32": paired(v, values["fp32"]),
                   "max_abs_deviation": deviation[name],
                   "all": v} for name, v in values.items()}
    for name, row in rows.items():
        print(f"  {name:<48} {row['sentences_per_s']:8.1f}  x{row['vs_fp32']:.2f}  max |h - h_fp32| "
              f"{row['max_abs_deviation']:.3f}")
    return {"rows": rows, "skipped": skipped}


def main():
    p = parser(__doc__)
    p.add_argument("--checkpoint", required=True, help="the run whose throughput and start-up are measured")
    p.add_argument("--score", nargs=2, action="append", default=[], metavar=("RUN", "DATA"),
                   help="also score RUN on DATA's test split in every precision (repeatable)")
    p.add_argument("--thread-counts", default="1", help="comma-separated torch thread counts (default: 1)")
    p.add_argument("--startup-pairs", type=int, default=None, help="start-up pairs (7; 2 with --quick)")
    p.add_argument("--candidates", action="store_true", help="also time the int8 implementations considered")
    args = p.parse_args()
    setup(args)
    args.thread_counts = [int(t) for t in args.thread_counts.split(",")]
    args.startup_pairs = args.startup_pairs or (2 if args.quick else 7)
    skipped = bf16_skip_reason()
    if skipped:
        print(skipped)
    precisions = ["fp32", "int8"] + ([] if skipped else ["bf16"])
    texts = snips_texts(args.data, 128 if args.quick else N_SENTENCES)
    machine = machine_info()
    print(f"{machine['cpu']}, native bf16: {machine['native_bf16']}, load average {machine['load_average']}")

    rows, agreement = throughput(args, texts, precisions, skipped)
    int8_candidates = candidates(args, texts) if args.candidates else None
    print("test scores per precision (points):", flush=True)
    deltas = score_deltas(args.score, precisions)
    print(f"start-up: {args.startup_pairs} pairs", flush=True)
    start = startup(args.checkpoint, args.startup_pairs)
    print(f"  infer.py one sentence: {start['median_extra_s']:+.2f} s over import torch, ratio "
          f"{start['median_ratio']:.2f} (medians of pairs)")
    write_results("inference", {
        "note": "timings from a machine shared with other work: compare the ratios between contenders measured in "
                "the same rounds and the paired start-up figures, not absolute sentences/s",
        "sentences": len(texts), "texts": "SNIPS test + dev + train in that order, words joined by spaces, the first "
                                          f"{len(texts)}",
        "peer": "transformers BertTokenizerFast + BertModel from the same checkpoint, batches of 32 in file order, "
                "our head modules on its hidden states, arg-max per sentence and per sub-token (no alignment, "
                "windows, BIO decoding or spans)",
        "bf16_skipped": skipped, "throughput": rows, "agreement_on_throughput_texts": agreement,
        "int8_candidates": int8_candidates, "scores": deltas, "startup": start,
        "load_at_start": machine["load_average"]}, args)


if __name__ == "__main__":
    main()
