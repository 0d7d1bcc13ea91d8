"""Scoring a model on a split: read each word's prediction where its label was put, decode, compare.

Sentence labels are the arg-max of the sentence logits; tags are read at each word's first sub-token (where
training put the word's label) and decoded as the best valid BIO path. Metrics compare names (metrics.py).
"""

import torch

from . import metrics
from .batching import batches
from .model import at_words

EVAL_BATCH = 64  # sentences per forward pass: no gradients are kept, so twice the training batch fits
NONE = -1  # no prediction: a word past the position limit


@torch.inference_mode()
def head_outputs(model, source, split, forward=None):
    """What the heads say about a split, computed once for all that reads it: per batch, (the sentences' indices,
    sentence logits (B, C) or None, tag logits at each word's first sub-token (B, W, K) or None, word counts),
    float32 on the CPU. `forward(batch)`: what computes them (the model, or a run's own: a stored encoder's)."""
    device = next(model.parameters()).device
    forward = forward or model
    model.eval()
    outputs = []
    for batch in batches(source.ids[split], EVAL_BATCH):
        batch = batch.to(device)
        batch.source, batch.split = source.name, split  # what a stand-in for the encoder looks up
        out = forward(batch)
        cls = out.cls_logits.float().cpu() if source.labels else None
        emissions, lengths = None, None
        if source.tags:
            emissions, words = at_words(out.ner_logits, batch.words)  # (B, W, K), (B, W)
            emissions, lengths = emissions.float().cpu(), words.sum(1).tolist()
        outputs.append((batch.index, cls, emissions, lengths))
    return outputs


@torch.inference_mode()
def predict(model, source, split, forward=None, outputs=None):
    """(label names or None, tag names per word or None) for a split, in its order (from `outputs`, the split's
    `head_outputs`, when known)."""
    ids, examples = source.ids[split], getattr(source.splits, split)
    if outputs is None:
        outputs = head_outputs(model, source, split, forward)
    device = next(model.parameters()).device
    label_ids = torch.full((len(ids),), NONE)  # (N,)
    tag_ids = torch.full((len(ids), max((len(ex.words) for ex in examples), default=0)), NONE)  # (N, W)
    for index, cls, emissions, lengths in outputs:
        if cls is not None:
            label_ids[index] = cls.argmax(-1)
        if emissions is not None:
            for i, path in zip(index, model.ner_head.decode(emissions.to(device), lengths)):
                tag_ids[i, : len(path)] = torch.tensor(path, dtype=torch.long)
    labels = [source.labels.names[k] for k in label_ids.tolist()] if source.labels else None
    # A word past the position limit has no prediction (still NONE): it is scored as "O", i.e. as a miss.
    tags = [[source.tags.names[k] if k != NONE else "O" for k in row[: len(ex.words)]]
            for row, ex in zip(tag_ids.tolist(), examples)] if source.tags else None
    return labels, tags


def evaluate(model, source, split, forward=None, outputs=None):
    """Every metric that applies to this source, as a flat dict of numbers (the rest: as `predict` takes them)."""
    return score(getattr(source.splits, split), *predict(model, source, split, forward, outputs))


def score(examples, labels, tags):
    """The metrics of predicted `labels` and `tags` (None: not predicted) against the examples' gold ones."""
    return metrics.evaluate([ex.label for ex in examples] if labels else None, labels,
                            [list(ex.tags) for ex in examples] if tags else None, tags)


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
