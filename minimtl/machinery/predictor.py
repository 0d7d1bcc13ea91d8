"""Raw text in, a sentence category and entity spans out, from a checkpoint written by training: the lesson's
inference (inference.py) with what real use needs besides.

    predictor = load_predictor("runs/latest")     # minimtl.load; machinery/checkpoint.py reads the directory
    predictor.predict("Alice went to Paris.")     # infer.py --json's object as a dict (a list for a list)
    for pred in predictor.predictions(["Alice went to Paris."]):   # the Prediction objects behind it
        print(format_prediction(pred))

The pipeline, per text:

    text -> split_long_text -> words with character offsets
         -> overlapping windows of at most max_len sub-tokens (so no length is too long, and no word is lost;
            the sentences of a text are each other's context, as in training with --context)
         -> (with word shapes: each word's shape, from its original text, on each of its sub-tokens)
         -> model -> tag logits at each word's first sub-token -> the best valid BIO sequence
                     (TokenHead.decode) -> its entities, each with the probability that it is exactly
                     right (calibration.entities) -> spans with character offsets
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
from dataclasses import replace
from itertools import accumulate

import torch

from ..batching import Batch, attention_mask, batch_indices, pad
from ..bio import split_tag
from ..guards.errors import UserError
from ..extensions.calibration import entities
from ..extensions.precision import autocast, for_inference
from ..extensions.context import (in_context, in_sentence_layout, merge_windows, sentences_of, split_long_text,
                                  window_inputs, windows)
from ..inference import Prediction, spans, with_label
from ..tokenization import WordTokenizer
from ..extensions.wordshape import NONE, shape_rows
from .assemble import word_shapes_of

BATCH_SIZE = 32  # windows per forward pass


class Predictor:
    def __init__(self, model, meta, tokenizer: WordTokenizer, device="cpu", precision="fp32"):
        """`precision`: "fp32", "bf16" or "int8" (precision.py); the model is changed in place for it."""
        self.model = for_inference(model.to(device).eval(), precision, device)
        self.device, self.precision = device, precision
        self.tokenizer = tokenizer
        self.labels = meta.get("labels") or None
        self.tags = meta.get("tags") or None
        # Each head's calibrated temperature (calibration.py): it changes the probabilities, never a prediction.
        # A checkpoint from before calibration has none: T = 1, the plain softmax.
        temperature = meta.get("temperature") or {}
        self.cls_temperature, self.ner_temperature = (float(temperature.get(h, 1.0)) for h in ("cls", "ner"))
        # The length the model was trained on; without it, the most its position embeddings allow.
        self.max_len = int(meta.get("max_len") or model.bert.config.max_tokens)
        self.context = bool(meta.get("context"))  # trained reading each sentence in its document
        # Overlap between windows: each word near a cut is read again with a quarter window of context.
        self.stride = self.max_len // 4

    @property
    def entity_types(self):
        """Every entity type the checkpoint can predict, sorted (e.g. for a legend); empty without a tagger."""
        return sorted({split_tag(tag)[1] for tag in self.tags or () if tag != "O"})

    def predict(self, texts: str | list[str]) -> dict | list[dict]:
        """What `infer.py --json` prints for each text (docs/operating.md, "What `--json` prints"), as plain
        dicts, lists, strings and numbers: one for a string, a list of them for a list of strings."""
        if isinstance(texts, str):
            return self.predict([texts])[0]
        return [pred.to_json() for pred in self.predictions(texts)]

    def predictions(self, texts: list[str]) -> list[Prediction]:
        """One Prediction per text, in order: the objects that `predict` serialises, for code that filters or
        formats them. An empty or whitespace-only text, or one that is no string, is a UserError."""
        if not isinstance(texts, (list, tuple)):  # read more than once below, and a string is no list of texts
            raise UserError(f"give a list of texts (or one string to predict), not a {type(texts).__name__}")
        for i, text in enumerate(texts, 1):
            if not isinstance(text, str):
                raise UserError(f"text {i} is not a string but {type(text).__name__}")
            if not text.strip():
                raise UserError(f"text {i} is empty")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates: what undecodable bytes in argv turn into
                raise UserError(f"text {i} is not valid Unicode (undecodable bytes?)") from None
        words = [split_long_text(self.tokenizer, text) for text in texts]
        # A model trained with --context tags each sentence read in its text (`_in_documents`); the category, and
        # every other model's tags, come from windows over the whole text.
        in_documents = self.context and self.tags is not None
        per_text = [windows(self.tokenizer, [w.text for w in ws], self.max_len, self.stride) for ws in words]
        if self.labels is not None or not in_documents:
            # A text that normalises to zero words (only control characters, say) still gets one window,
            # [CLS][SEP], so it still gets a sentence category.
            flat = [enc for text_windows in per_text for _, enc in text_windows]
            extra = {}
            if word_shapes_of(self.model):  # from the words' original text, as training computes them
                texts_words = [[w.text for w in ws] for ws in words]
                extra["shape_ids"] = shape_rows(flat, [text for text, wins in zip(texts_words, per_text) for _ in wins],
                                                [first for wins in per_text for first, _ in wins])
            cls_probs, ner_scores = self._run([e.input_ids for e in flat], extra)
        sentence_rows = self._in_documents(texts, words) if in_documents else None

        out, at = [], 0
        for t, (text, ws, text_windows) in enumerate(zip(texts, words, per_text)):
            mine = range(at, at + len(text_windows))
            at += len(text_windows)
            pred = Prediction(text, ws)
            if self.labels is not None:  # every window votes equally
                with_label(pred, torch.stack([cls_probs[j] for j in mine]).mean(0), self.labels)
            if self.tags is not None:
                if in_documents:  # per sentence, as evaluation decodes them
                    emissions, lengths = padded_rows(sentence_rows[t])
                else:  # each word's row comes from the window where it has the most context
                    emissions = merge_windows(text_windows, [ner_scores[j] for j in mine], len(ws))[None]
                    lengths = [len(ws)]  # (1, words, K)
                head = self.model.ner_head
                paths = head.decode(emissions, lengths)
                pred.tags = [self.tags[k] for path in paths for k in path]
                found = entities(head, emissions, lengths, paths, self.ner_temperature)
                starts = accumulate(lengths, initial=0)  # each sentence's first word in the text
                pred.entities = spans(text, ws, [(kind, a + start, b + start, *p)
                                                 for sentence, start in zip(found, starts) for kind, a, b, *p in sentence])
            out.append(pred)
        return out

    def _in_documents(self, texts, words):
        """Each text's sentences (context.sentences_of), each read in the text as its document, as training with
        --context read its documents (InContext): per text, each sentence's tag logits at its words, (n, K). A
        sentence longer than a window is read in windows of its own, as a text alone is."""
        parts = [sentences_of(text, ws) for text, ws in zip(texts, words)]
        documents = [[[w.text for w in ws[r.start : r.stop]] for r in part] for ws, part in zip(words, parts)]
        read = in_context(self.tokenizer, documents, self.max_len, self.max_len)
        layouts = [in_sentence_layout(enc, own) for _, enc, own in read]
        extra = window_inputs(read, layouts)
        if word_shapes_of(self.model):
            sentences = [sentence for document in documents for sentence in document]
            words_of = [[w for sentence in document for w in sentence] for document in documents]
            extra["shape_ids"] = shape_rows([enc for enc, _ in layouts], sentences)
            extra["window_shape_ids"] = shape_rows([enc for _, enc, _ in read],
                                                   [ws for ws, document in zip(words_of, documents) for _ in document],
                                                   [first for first, _, _ in read])
        _, scores = self._run([enc.input_ids for enc, _ in layouts], extra)
        rows = iter(zip(layouts, scores, (sentence for document in documents for sentence in document)))
        out = []
        for part in parts:
            out.append([] if part else [torch.zeros((0, len(self.tags)))])  # a text of no words: no sentence
            for (enc, _), logits, sentence in (next(rows) for _ in part):
                if enc.truncated:  # InContext reads a batch without windows as it is
                    alone = windows(self.tokenizer, sentence, self.max_len, self.stride)
                    shapes = shape_rows([e for _, e in alone], [sentence] * len(alone), [first for first, _ in alone])
                    _, scores = self._run([e.input_ids for _, e in alone],
                                          {"shape_ids": shapes} if word_shapes_of(self.model) else {})
                    out[-1].append(merge_windows(alone, scores, len(sentence)))
                else:
                    out[-1].append(logits[enc.first_positions])
        return out

    def _run(self, rows, extra):
        """Per input row (token ids), in input order: sentence probabilities (C,) and tag logits (positions, K).
        `extra`: more integer inputs per row, by name (batching.SplitIds.extra): word shapes, windows."""
        cls_probs, ner_scores = [None] * len(rows), [None] * len(rows)
        with torch.inference_mode():
            for index in batch_indices([len(r) for r in rows], BATCH_SIZE):  # shortest first: little padding
                mine = [rows[j] for j in index]
                more = {name: pad([values[j] for j in index], NONE).to(self.device) for name, values in extra.items()}
                batch = Batch(index, pad(mine, self.tokenizer.pad_id).to(self.device), attention_mask(mine).to(self.device),
                              None, None, None, more)
                with autocast(self.device, self.precision):
                    out = self.model(batch)
                if out.cls_logits is not None:
                    probs = (out.cls_logits.float() / self.cls_temperature).softmax(-1).cpu()
                    for row, j in enumerate(index):
                        cls_probs[j] = probs[row]
                if out.ner_logits is not None:
                    logits = out.ner_logits.float().cpu()  # (B, T, K)
                    for row, j in enumerate(index):
                        ner_scores[j] = logits[row, : len(rows[j])]  # without the padding
        return cls_probs, ner_scores


def padded_rows(rows):
    """Sentences' (n, K) emission rows -> (S, max n, K), zeros past each one's end, and the lengths."""
    lengths = [len(r) for r in rows]
    out = torch.zeros((len(rows), max(lengths), rows[0].shape[-1]))
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out, lengths


def confident(pred: Prediction, threshold: float) -> Prediction:
    """`pred` without the entities whose confidence is below `threshold`, and their words tagged O, so that
    the tags and the entities say the same."""
    if pred.entities is None:
        return pred
    dropped = {i for s in pred.entities if s.confidence < threshold for i in range(s.first_word, s.last_word + 1)}
    return replace(pred, entities=[s for s in pred.entities if s.confidence >= threshold],
                   tags=[("O" if i in dropped else tag) for i, tag in enumerate(pred.tags)])


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
