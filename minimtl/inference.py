"""Raw text in, a sentence category and entity spans out, from a checkpoint written by training.

    predictor = load_predictor("runs/latest")            # machinery/checkpoint.py reads the directory
    for pred in predictor.predict(["Alice went to Paris last summer."]):
        print(format_prediction(pred))        # or json.dumps(pred.to_json())

The pipeline, per text:

    text -> split_text -> words with character offsets
         -> overlapping windows of at most max_len sub-tokens (so no length is too long, and no word is lost;
            the sentences of a text are each other's context, as in training with --context)
         -> (with word shapes: each word's shape, from its original text, on each of its sub-tokens)
         -> model -> tag logits at each word's first sub-token -> the best valid BIO sequence
                     (TokenHead.decode) -> its entities, each with the probability that it is exactly
                     right (TokenHead.entities) -> spans with character offsets
                  -> softmax of the sentence logits, averaged over the text's windows -> category

Probabilities use the temperatures calibrated after training (calibration.py), so that an entity at 0.8 is
right about 80% of the time; a temperature changes no category, tag or entity.
The model runs in float32 unless the Predictor is given another `precision` (precision.py: bf16 products, or
the encoder's Linears in int8), chosen when it is built; the checkpoint itself is only read.

Windows from all texts are batched together, shortest first, so padding is small and a batch of short
texts costs one forward pass instead of one per text. The model's activations are bounded by the
batch, not by the input: a long text only adds windows, and each window keeps just its sentence
probabilities and its (positions, tags) logits.
"""

import json
import unicodedata
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from .bio import split_tag
from .batching import attention_mask, batch_indices, pad
from .errors import UserError
from .precision import autocast, for_inference
from .tokenization import Aligner, Word, split_text, windows
from .wordshape import NONE, position_shapes, word_shape

BATCH_SIZE = 32  # windows per forward pass
TOP_LABELS = 5  # class probabilities reported besides the winner: enough to see what the model hesitated over


@dataclass(frozen=True)
class Span:
    """An entity found in raw text: words first..last (inclusive) and the characters they cover."""

    type: str
    first_word: int
    last_word: int
    start: int
    end: int
    text: str  # original[start:end], inner whitespace included
    confidence: float  # the probability that this exact span is an entity of this type (TokenHead.entities)


@dataclass
class Prediction:
    text: str
    words: list[Word]
    label: str | None = None  # None when the checkpoint has no sentence task
    label_probability: float | None = None
    labels: dict[str, float] | None = None  # the TOP_LABELS most probable classes, most probable first
    tags: list[str] | None = None  # one per word; None when the checkpoint has no token task
    entities: list[Span] | None = None

    def to_json(self):
        out = {"text": self.text}
        if self.label is not None:
            out.update(label=self.label, label_probability=_round(self.label_probability),
                       labels={name: _round(p) for name, p in self.labels.items()})
        if self.entities is not None:
            out["entities"] = [
                {"type": s.type, "text": s.text, "start": s.start, "end": s.end,
                 "confidence": _round(s.confidence), "first_word": s.first_word, "last_word": s.last_word}
                for s in self.entities
            ]
        out["words"] = [w.text for w in self.words]
        if self.tags is not None:
            out["tags"] = self.tags
        return out


def _round(p):
    return round(float(p), 4)  # float32 softmax is not meaningful beyond this


class Predictor:
    def __init__(self, model, meta, aligner: Aligner, device="cpu", precision="fp32"):
        """`precision`: "fp32", "bf16" or "int8" (precision.py); the model is changed in place for it."""
        self.model = for_inference(model.to(device).eval(), precision, device)
        self.device, self.precision = device, precision
        self.aligner = aligner
        self.labels = meta.get("labels") or None
        self.tags = meta.get("tags") or None
        # Each head's calibrated temperature (calibration.py): it changes the probabilities, never a prediction.
        # A checkpoint from before calibration has none: T = 1, the plain softmax.
        temperature = meta.get("temperature") or {}
        self.cls_temperature, self.ner_temperature = (float(temperature.get(h, 1.0)) for h in ("cls", "ner"))
        # The length the model was trained on; without it, the most its position embeddings allow.
        self.max_len = int(meta.get("max_len") or model.bert.config.max_tokens)
        # Overlap between windows: each word near a cut is read again with a quarter window of context.
        self.stride = self.max_len // 4

    @property
    def entity_types(self):
        """Every entity type the checkpoint can predict, sorted (e.g. for a legend); empty without a tagger."""
        return sorted({split_tag(tag)[1] for tag in self.tags or () if tag != "O"})

    def predict(self, texts: list[str]) -> list[Prediction]:
        """One Prediction per text, in order. An empty or whitespace-only text is a UserError."""
        for i, text in enumerate(texts, 1):
            if not text.strip():
                raise UserError(f"text {i} is empty")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates: what undecodable bytes in argv turn into
                raise UserError(f"text {i} is not valid Unicode (undecodable bytes?)") from None
        words = [split_text(self.aligner, text) for text in texts]
        # A text that normalises to zero words (only control characters, say) still gets one window,
        # [CLS][SEP], so it still gets a sentence category.
        per_text = [windows(self.aligner, [w.text for w in ws], self.max_len, self.stride) for ws in words]
        flat = [enc for text_windows in per_text for _, enc in text_windows]
        shapes = None
        if self.model.word_shapes:  # from the words' original text, as training computes them (wordshape.py)
            shapes = []
            for ws, text_windows in zip(words, per_text):
                text_shapes = [word_shape(w.text) for w in ws]
                shapes += [position_shapes(enc.word_ids, text_shapes[first:]) for first, enc in text_windows]
        cls_probs, ner_scores = self._run(flat, shapes)

        out, at = [], 0
        for text, ws, text_windows in zip(texts, words, per_text):
            mine = range(at, at + len(text_windows))
            at += len(text_windows)
            pred = Prediction(text, ws)
            if self.labels is not None:
                probs = torch.stack([cls_probs[j] for j in mine]).mean(0)  # every window votes equally
                top = probs.topk(min(TOP_LABELS, len(self.labels)))
                pred.labels = {self.labels[k]: float(p) for p, k in zip(top.values, top.indices.tolist())}
                pred.label, pred.label_probability = self.labels[int(top.indices[0])], float(top.values[0])
            if self.tags is not None:
                # Each word's row comes from the window where it has the most context.
                rows = [ner_scores[j] for j in mine]
                emissions = merge_windows(text_windows, rows, len(ws))[None]  # (1, words, K)
                head = self.model.ner_head
                paths = head.decode(emissions, [len(ws)])
                pred.tags = [self.tags[k] for k in paths[0]]
                pred.entities = spans(text, ws, head.entities(emissions, [len(ws)], paths, self.ner_temperature)[0])
            out.append(pred)
        return out

    def _run(self, encodings, shapes=None):
        """Per window, in input order: sentence probabilities (C,) and tag logits (positions, K). `shapes`: each
        window's shape id per position, for a model with word shapes."""
        cls_probs, ner_scores = [None] * len(encodings), [None] * len(encodings)
        rows = [e.input_ids for e in encodings]
        with torch.inference_mode():
            for index in batch_indices([len(r) for r in rows], BATCH_SIZE):  # shortest first: little padding
                mine = [rows[j] for j in index]
                shape_ids = None if shapes is None else pad([shapes[j] for j in index], NONE).to(self.device)
                with autocast(self.device, self.precision):
                    out = self.model(pad(mine, self.aligner.pad_id).to(self.device),
                                     attention_mask(mine).to(self.device), shape_ids=shape_ids)
                if out.cls_logits is not None:
                    probs = (out.cls_logits.float() / self.cls_temperature).softmax(-1).cpu()
                    for row, j in enumerate(index):
                        cls_probs[j] = probs[row]
                if out.ner_logits is not None:
                    logits = out.ner_logits.float().cpu()  # (B, T, K)
                    for row, j in enumerate(index):
                        ner_scores[j] = logits[row, : len(encodings[j].input_ids)]  # without the padding
        return cls_probs, ner_scores


def merge_windows(windows, scores, n_words) -> torch.Tensor:
    """One score row per word from per-window, per-position `scores` .

    A word seen by several windows takes its row from the one where it has the most context.
    """
    best = np.full(n_words, -1)  # context of the window currently chosen for each word
    source = np.zeros(n_words, dtype=np.int64)  # which window that is
    for w, (first, enc) in enumerate(windows):
        n = len(enc.first_positions)
        position = np.array(enc.first_positions, dtype=np.int64)
        last_position = len(enc.input_ids) - 2  # the last content position, before [SEP]
        # Sub-tokens of context before a word's first sub-token and after its last one in this window.
        left = position - 1 if first > 0 else np.full(n, len(enc.input_ids))
        ends = np.append(position[1:] - 1, last_position)
        right = last_position - ends if first + n < n_words else np.full(n, len(enc.input_ids))
        context = np.minimum(left, right)
        better = context > best[first : first + n]  # strict: ties stay with the earlier window
        best[first : first + n][better] = context[better]
        source[first : first + n][better] = w
    rows = [torch.as_tensor(s) for s in scores]
    out = torch.empty((n_words, *rows[0].shape[1:]), dtype=rows[0].dtype)
    for w, (first, enc) in enumerate(windows):
        mine = np.flatnonzero(source == w)
        if len(mine):
            positions = np.array(enc.first_positions)[mine - first]
            out[torch.from_numpy(mine)] = rows[w][torch.from_numpy(positions)]
    return out


def spans(text: str, words: Sequence[Word], entities) -> list[Span]:
    """Entity spans of `text` from its words (as `Aligner.split_text` gave them) and the decoded entities,
    (type, first word, last word, probability) each (TokenHead.entities)."""
    return [Span(kind, first, last, words[first].start, words[last].end, text[words[first].start : words[last].end],
                 probability) for kind, first, last, probability in entities]


def confident(pred: Prediction, threshold: float) -> Prediction:
    """`pred` without the entities whose confidence is below `threshold` (its tags stay as decoded)."""
    if pred.entities is None:
        return pred
    return replace(pred, entities=[s for s in pred.entities if s.confidence >= threshold])


def format_prediction(pred: Prediction) -> str:
    """A few lines for a human: the text, the category, then one aligned line per entity."""
    lines = [_visible(pred.text)]
    if pred.label is not None:
        lines.append(f"  category: {pred.label} ({pred.label_probability:.2f})")
    if pred.entities is not None:
        if not pred.entities:
            lines.append("  (no entities)")
        rows = [(s.type, _quote(s.text), f"{s.start}-{s.end}", f"{s.confidence:.2f}") for s in pred.entities]
        widths = [max((len(r[c]) for r in rows), default=0) for c in range(3)]
        for row in rows:
            lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])
    return "\n".join(lines)


def _visible(text):
    """The text with control characters escaped: a stray \\x1b must not drive the terminal."""
    return "".join(c.encode("unicode_escape").decode() if unicodedata.category(c) == "Cc" else c for c in text)


def _quote(text):
    """Quoted on one line: an entity can span a newline or contain quotes."""
    return json.dumps(text, ensure_ascii=False)
