"""Scoring a model on a split: read each word's prediction where its label was put, decode, compare.

Sentence labels come from the arg-max of the sentence logits. Tags are read at each word's first
sub-token (exactly where training put the word's label, see tokenization.py) and decoded as the best
*valid* BIO sequence (TokenHead.decode: constrained softmax choices, or the CRF's Viterbi path). Metrics compare names, not ids (metrics.py).
With several sources, each is scored on its own split with the metrics its tasks have, and the metric
names get the source's name in front ("conll2003/entity_f1").
"""

import torch
import torch.distributed as dist

from . import metrics
from .batching import batches
from .model import at_words
from .precision import autocast

EVAL_BATCH = 64  # sentences per forward pass: no gradients are kept, so twice the training batch fits
NOT_MINE = -1  # a prediction another process of a torchrun job fills in


def training_precision(device):
    # Training's own evaluation: bf16 on CUDA halves memory traffic. CPU and MPS stay in fp32, whatever
    # precision training ran in: scores and predictions are then the same on every CPU, bf16 hardware or not.
    return "bf16" if device.type == "cuda" else "fp32"


@torch.inference_mode()
def head_outputs(model, source, split, features=None, shard=(0, 1), precision=None):
    """What the heads say about one split, computed once for everything read from it (the predictions below;
    the temperatures and calibration errors of calibration.py): per batch of this process's share, (the
    sentences' indices in the split, sentence logits (B, C) or None, tag logits at each word's first sub-token
    (B, W, K) or None, word counts (B,)), in float32 on the CPU.

    `shard` (rank, world): under torchrun each of the `world` processes runs every world-th batch.
    `precision`: one of precision.PRECISIONS, the model already made ready for it (`precision.for_inference`);
    None: as training evaluates (`training_precision`).
    """
    rank, world = shard
    device = next(model.parameters()).device
    precision = precision or training_precision(device)
    model.eval()
    outputs = []
    for batch in batches(source.ids[split], EVAL_BATCH)[rank::world]:
        batch = batch.to(device)
        with autocast(device, precision):
            cached = features.hidden(source.name, split, batch) if features else None
            out = model(batch.input_ids, batch.attention_mask, cached, batch.shape_ids)
        cls = out.cls_logits.float().cpu() if source.labels else None
        emissions, lengths = None, None
        if source.tags:
            emissions, words = at_words(out.ner_logits, batch.words)  # (B, W, K), (B, W)
            emissions, lengths = emissions.float().cpu(), words.sum(1).tolist()
        outputs.append((batch.index, cls, emissions, lengths))
    return outputs


@torch.inference_mode()
def predict(model, source, split, features=None, shard=(0, 1), precision=None, outputs=None):
    """(label names or None, tag names per word or None) for one split of a source, in the split's order.

    `outputs`: the split's `head_outputs`, when they are already known; else they are computed here, with
    `features`, `shard` and `precision` as `head_outputs` takes them. Under torchrun the predicted ids of the
    processes' shares are merged, so every process returns the predictions for the whole split.
    """
    ids, examples = source.ids[split], getattr(source.splits, split)
    if outputs is None:
        outputs = head_outputs(model, source, split, features, shard, precision)
    device = next(model.parameters()).device
    label_ids = torch.full((len(ids),), NOT_MINE)  # (N,)
    tag_ids = torch.full((len(ids), max((len(ex.words) for ex in examples), default=0)), NOT_MINE)  # (N, W)
    for index, cls, emissions, lengths in outputs:
        if cls is not None:
            label_ids[index] = cls.argmax(-1)
        if emissions is not None:
            for i, path in zip(index, model.ner_head.decode(emissions.to(device), lengths)):
                tag_ids[i, : len(path)] = torch.tensor(path, dtype=torch.long)
    if shard[1] > 1:  # every entry was filled by exactly one process, the others hold NOT_MINE there
        label_ids, tag_ids = (merged(t, device) for t in (label_ids, tag_ids))
    labels = [source.labels.names[k] for k in label_ids.tolist()] if source.labels else None
    # A word past the position limit has no prediction (still NOT_MINE): it is scored as "O", i.e. as a miss.
    tags = [[source.tags.names[k] if k != NOT_MINE else "O" for k in row[: len(ex.words)]]
            for row, ex in zip(tag_ids.tolist(), examples)] if source.tags else None
    return labels, tags


def merged(ids, device):
    on_device = ids.to(device)  # where the process group's backend can reach it (a GPU for nccl)
    dist.all_reduce(on_device, op=dist.ReduceOp.MAX)
    return on_device.cpu()


def evaluate(model, source, split, features=None, shard=(0, 1), outputs=None):
    """Every metric that applies to this source, as a flat dict of numbers (`outputs`: as `predict` takes them)."""
    return score(getattr(source.splits, split), *predict(model, source, split, features, shard, outputs=outputs))


def score(examples, labels, tags):
    """The metrics of predicted `labels` and `tags` (either None when not predicted) against the examples'
    gold ones. Kept apart from `evaluate` so that a report that also needs the predictions themselves
    (machinery/report.py) scores them exactly as training does."""
    return metrics.evaluate([ex.label for ex in examples] if labels else None, labels,
                            [list(ex.tags) for ex in examples] if tags else None, tags)


def evaluate_sources(model, sources, split, features=None, shard=(0, 1), outputs=None):
    """The metrics of every source that has this split, in one flat dict: plain names when the run has one
    source, "source/metric" when it has several (also if only one of them has a test split). `outputs`:
    {source name: its split's `head_outputs`}, when they are already known."""
    scores = {s.name: evaluate(model, s, split, features, shard, (outputs or {}).get(s.name)) for s in sources
              if getattr(s.splits, split) is not None}
    if len(sources) == 1:
        return next(iter(scores.values()), {})
    return {f"{name}/{k}": v for name, metrics in scores.items() for k, v in metrics.items()}


def selection_score(scores):
    """The dev score that picks the best epoch: the mean of every sentence accuracy and entity F1 present
    (one per task and source), so each task counts the same whatever its data size."""
    parts = [v for k, v in scores.items() if k.rsplit("/", 1)[-1] in ("label_accuracy", "entity_f1")]
    return sum(parts) / len(parts)


def format_scores(scores):
    names = {"label_accuracy": "acc", "entity_f1": "F1", "frame_accuracy": "frame"}
    parts = []
    for key, value in scores.items():
        prefix, _, name = key.rpartition("/")
        if name in names:
            parts.append(f"{prefix + ' ' if prefix else ''}{names[name]} {100 * value:.2f}")
    return "  ".join(parts)
