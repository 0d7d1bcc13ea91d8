"""Raw text in, a sentence category and entity spans out: the trained model applied to what a user types.

    text -> words with character offsets (split_text) -> sub-tokens -> the model
         -> softmax of the sentence logits -> category
         -> tag logits at each word's first sub-token -> the best valid BIO path -> entities -> their spans

machinery/predictor.py serves a trained run the same way, with what real use needs besides (texts of any
length, each entity's probability of being exactly right).
"""

from dataclasses import dataclass

import torch

from .batching import SplitIds, collate
from .bio import chunks
from .model import at_words
from .tokenization import Word, split_text

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
    confidence: float | None = None  # the probability that this exact span is right, where it is computed


@dataclass
class Prediction:
    text: str
    words: list[Word]
    label: str | None = None  # None when the model has no sentence task
    label_probability: float | None = None
    labels: dict[str, float] | None = None  # the TOP_LABELS most probable classes, most probable first
    tags: list[str] | None = None  # one per word; None when the model has no token task
    entities: list[Span] | None = None

    def to_json(self):
        out = {"text": self.text}
        if self.label is not None:
            out.update(label=self.label, label_probability=_round(self.label_probability),
                       labels={name: _round(p) for name, p in self.labels.items()})
        if self.entities is not None:
            out["entities"] = [{"type": s.type, "text": s.text, "start": s.start, "end": s.end,
                                **({} if s.confidence is None else {"confidence": _round(s.confidence)}),
                                "first_word": s.first_word, "last_word": s.last_word} for s in self.entities]
        out["words"] = [w.text for w in self.words]
        if self.tags is not None:
            out["tags"] = self.tags
        return out


def _round(p):
    return round(float(p), 4)  # float32 softmax is not meaningful beyond this


@torch.inference_mode()
def predict(model, tokenizer, texts, labels=None, tags=None, max_len=None):
    """One Prediction per text, all in one batch; `labels` and `tags` name the heads' classes. Words past
    `max_len` positions (by default the model's limit) are tagged O."""
    model.eval()
    words = [split_text(tokenizer, text) for text in texts]
    encodings = tokenizer.encode([[w.text for w in ws] for ws in words], max_len or model.bert.config.max_tokens)
    split = SplitIds([e.input_ids for e in encodings], [e.first_positions for e in encodings], None, None, 0,
                     tokenizer.pad_id)
    batch = collate(split, range(len(texts))).to(next(model.parameters()).device)
    out = model(batch)
    predictions = [Prediction(text, ws) for text, ws in zip(texts, words)]
    if labels is not None:
        for p, probabilities in zip(predictions, out.cls_logits.float().softmax(-1).cpu()):
            with_label(p, probabilities, labels)
    if tags is not None:
        emissions, real = at_words(out.ner_logits, batch.words)  # (B, W, K), (B, W)
        lengths = real.sum(1).tolist()
        for p, path in zip(predictions, model.ner_head.decode(emissions, lengths)):
            p.tags = [tags[k] for k in path] + ["O"] * (len(p.words) - len(path))
            p.entities = spans(p.text, p.words, chunks(p.tags))
    return predictions


def with_label(prediction, probabilities, labels):
    """Fill in `prediction`'s category from the sentence head's class `probabilities` (C,)."""
    top = probabilities.topk(min(TOP_LABELS, len(labels)))
    prediction.labels = {labels[k]: float(p) for p, k in zip(top.values, top.indices.tolist())}
    prediction.label, prediction.label_probability = labels[int(top.indices[0])], float(top.values[0])


def spans(text, words, entities):
    """Spans of `text` from its words and entities (type, first word, last word[, probability])."""
    return [Span(kind, first, last, words[first].start, words[last].end, text[words[first].start : words[last].end],
                 *probability) for kind, first, last, *probability in entities]
