"""Long texts and documents: overlapping windows over many words, and each sentence read in its document.

The model reads at most max_len positions, and a sentence alone lacks what its neighbours say about it. Two
transforms of what the model reads, attached where text becomes encodings:

- at inference (machinery/predictor.py), a long text is split into words a segment at a time
  (`split_long_text`), and read in overlapping windows of whole words, so any length works and no word is
  lost; each word's scores come from the window where it has the most context (`windows`, `merge_windows`);
- in training and evaluation (--context), each sentence of a document is read inside a window of its
  neighbouring words (`in_context`; FLERT, Schweter & Akbik 2020), and the heads read only the sentence's own
  positions of the window's states (`InContext`, `in_sentence_layout`): the same layout, labels and scores as
  the sentence alone, only the states come from reading it in its document. So the loss and the metrics stay
  per sentence, and a frozen backbone's feature cache holds as many rows as without context.
  infer.py reads a context model's texts the same way, a text's sentences (`sentences_of`) its document.
"""

from dataclasses import replace

import numpy as np
import torch

from ..model import MultiTaskModel
from ..tokenization import Encoding, Word, room, words_between
from ..guards.errors import UserError

WORD_CHARS = 1 << 14  # characters of one word that inference tokenizes (windows)
SEGMENT = 1 << 16  # characters of raw text split at once (split_long_text)


def split_long_text(tokenizer, text: str) -> list[Word]:
    """tokenization.split_text for a text of any length.

    A long text is split a segment of at most SEGMENT characters at a time (cut at whitespace where there is
    some, else inside a run of ASCII letters and digits, whose two halves are joined again; a text with
    neither is cut where it must), so the memory it takes follows the segment, not the text.
    """
    bounds = []
    for start, end in _segments(text):
        part = words_between(tokenizer, text, start, end)
        if part and bounds and bounds[-1][1] == part[0][0]:  # a word cut in two by the segment boundary
            bounds[-1] = (bounds[-1][0], part.pop(0)[1])
        bounds += part
    return [Word(text[start:end], start, end) for start, end in bounds]


def _segments(text):
    """(start, end) of consecutive pieces of `text` of at most SEGMENT characters, cut where a splitter
    would cut anyway (after whitespace) or where the two halves can safely be joined (between ASCII letters
    and digits)."""
    start = 0
    while len(text) - start > SEGMENT:
        end = start + SEGMENT
        near = text[end - SEGMENT // 16 : end]
        after_space = max(near.rfind(" "), near.rfind("\n"), near.rfind("\t"))
        if after_space >= 0:
            end = end - len(near) + after_space + 1
        else:
            end = next((i for i in range(end, end - len(near), -1)
                        if (text[i - 1] + text[i]).isascii() and (text[i - 1] + text[i]).isalnum()), end)
        yield start, end
        start = end
    yield start, len(text)


def windows(tokenizer, words: list[str], max_len: int, stride: int) -> list[tuple[int, Encoding]]:
    """Overlapping windows covering every word: (index of the window's first word, its encoding).

    Each window holds whole words and at most `max_len` positions; consecutive windows share words
    worth up to `stride` sub-tokens. A word too long for any window keeps its leading sub-tokens.
    Input that fits in `max_len` gives one window, identical to `encode([words], max_len)[0]`.
    """
    fits = room(max_len)
    if not 0 <= stride < fits:
        raise UserError(f"stride must be at least 0 and below max_len - 2 = {fits}, not {stride}")
    # A word longer than WORD_CHARS characters is tokenized from its start only: the window keeps at most its
    # first `fits` sub-tokens, which lie far inside that start (and WordPiece makes any word of over 100
    # characters a single [UNK] anyway), so a word of megabytes costs no more than one of kilobytes.
    (ids, word_ids), = tokenizer.subtokens([[w[:WORD_CHARS] for w in words]])
    ids, word_ids = np.array(ids, dtype=np.int64), np.array(word_ids, dtype=np.int64)
    starts = np.searchsorted(word_ids, np.arange(len(words)))  # first sub-token of each word
    counts = np.diff(np.append(starts, len(ids)))
    cut = counts > fits  # words too long for any window: they keep their first `fits` sub-tokens
    keep = np.arange(len(ids)) - starts[word_ids] < fits
    ids, word_ids = ids[keep], word_ids[keep]
    # before[i]: sub-tokens before word i, so words a..b-1 need before[b] - before[a] positions.
    before = np.concatenate([[0], np.cumsum(np.minimum(counts, fits))])
    out, first = [], 0
    while True:
        end = int(np.searchsorted(before, before[first] + fits, side="right")) - 1  # as many words as fit
        window_ids = ids[before[first] : before[end]].tolist()
        window_words = (word_ids[before[first] : before[end]] - first).tolist()
        out.append((first, tokenizer.wrap(window_ids, window_words, bool(cut[first:end].any()))))
        if end == len(words):
            return out
        # The next window starts at the earliest word that leaves at most `stride` sub-tokens of overlap,
        # but always at least one word further on, so the loop ends.
        first = max(first + 1, int(np.searchsorted(before, before[end] - stride, side="left")))


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


def by_document(examples):
    """Example indices grouped into documents: runs of consecutive examples with the same `document`; an
    example without one is a document of its own."""
    groups = []
    for i, ex in enumerate(examples):
        if groups and ex.document is not None and examples[groups[-1][-1]].document == ex.document:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def in_context(tokenizer, documents: list[list[list[str]]], window: int, max_len: int) \
        -> list[tuple[int, Encoding, range]]:
    """Every sentence of every document, encoded with as many neighbouring words of its document as fit in
    `window` positions: (the window's first word, as an index into the document's words; the window's
    Encoding; the sentence's own words, as indices into the window's words), one per sentence, in order.

    The room beside the sentence is shared: half before it, half after, and a side that reaches the start or
    the end of the document leaves what it cannot use to the other. Context is whole words, the nearest first,
    so it may begin or end inside a neighbouring sentence, as a window at inference does. A sentence too long
    for `window` is encoded alone and cut at `max_len`, as `encode` cuts it; context never crosses a document.
    """
    fits = room(window)
    sentences = [sentence for document in documents for sentence in document]
    pieces = iter(tokenizer.subtokens(sentences))
    out = []
    for document in documents:
        ids, word_ids, starts = [], [], [0]  # the document's sub-tokens, their words, each sentence's first word
        for words in document:
            sentence_ids, sentence_words = next(pieces)
            ids += sentence_ids
            word_ids += [starts[-1] + w for w in sentence_words]
            starts.append(starts[-1] + len(words))
        ids, word_ids = np.array(ids, dtype=np.int64), np.array(word_ids, dtype=np.int64)
        # before[k]: the document's sub-tokens before its word k (every word has at least one: subtokens).
        before = np.searchsorted(word_ids, np.arange(starts[-1] + 1))
        for s, e in zip(starts, starts[1:]):
            own = before[e] - before[s]
            if own > fits:
                end = before[s] + min(own, room(max_len))
                out.append((s, tokenizer.wrap(ids[before[s] : end].tolist(), (word_ids[before[s] : end] - s).tolist(),
                                            bool(end < before[e])), range(e - s)))
                continue
            spare = fits - own
            left = min(before[s], max(spare // 2, spare - (before[-1] - before[e])))
            first = int(np.searchsorted(before, before[s] - left, side="left"))  # whole words that fit before
            end = int(np.searchsorted(before, before[e] + spare - left, side="right")) - 1  # ... and after
            out.append((first, tokenizer.wrap(ids[before[first] : before[end]].tolist(),
                                            (word_ids[before[first] : before[end]] - first).tolist(), False),
                        range(s - first, e - first)))
    return out


def in_sentence_layout(enc: Encoding, own: range) -> tuple[Encoding, list[int]]:
    """A sentence in its window (`in_context`) as the heads read it: ([CLS], its own sub-tokens, [SEP]) — the
    encoding of the sentence alone — and `keep`, the window position each of those positions is read from."""
    positions = [p for p, w in enumerate(enc.word_ids) if w is not None and w in own]  # contiguous
    keep = [0, *positions, len(enc.input_ids) - 1]
    shift = positions[0] - 1 if positions else 0  # window position -> sentence position
    return (Encoding([enc.input_ids[p] for p in keep], [None, *(enc.word_ids[p] - own.start for p in positions), None],
                     [p - shift for p in enc.first_positions[own.start : own.stop]], enc.truncated), keep)


def window_inputs(windows, layouts):
    """The extra inputs (batching.SplitIds.extra) of sentences read in context: each one's window, and where each
    of its own positions is in the window. `windows` from `in_context`, `layouts` from `in_sentence_layout`."""
    return {"window_ids": [enc.input_ids for _, enc, _ in windows],
            "window_mask": [[1] * len(enc.input_ids) for _, enc, _ in windows],
            "keep": [keep for _, keep in layouts]}


class InContext(MultiTaskModel):
    """A MultiTaskModel that reads each sentence in its window: the encoder runs on the batch's windows
    (`extra["window_ids"]`, with their word shapes in `extra["window_shape_ids"]`), and the heads get the states
    at the sentence's own positions (`extra["keep"]`), laid out as the batch's `input_ids`, which hold the
    sentence alone. Everything after `features` — the heads, the loss, decoding, a feature cache — is the plain
    model's, on the sentence's own layout. A batch without windows (inference's windows over a long text) is
    read as it is."""

    def features(self, batch):
        if "window_ids" not in batch.extra:
            return super().features(batch)
        extra = dict(batch.extra)
        if "window_shape_ids" in extra:
            extra["shape_ids"] = extra.pop("window_shape_ids")
        window = replace(batch, input_ids=extra["window_ids"], attention_mask=extra["window_mask"], extra=extra)
        hidden = super().features(window)  # (B, Tw, [k,] H)
        keep = batch.extra["keep"]  # (B, T): padding reads position 0, and the heads mask it
        at = keep.view(*keep.shape, *[1] * (hidden.dim() - 2)).expand(-1, -1, *hidden.shape[2:])
        return hidden.gather(1, at)  # (B, T, [k,] H)


SENTENCE_ENDS = (".", "!", "?")


def sentences_of(text: str, words: list[Word]) -> list[range]:
    """A raw text's sentences, as ranges of its words: a sentence ends after a word ".", "!" or "?" that ends
    the text or is followed by whitespace, and at a line break. (A rule, not a model: "U.S. forces" is cut
    after "U.S.", which costs that sentence some of its context, never a word.)"""
    out, start = [], 0
    for i, w in enumerate(words):
        after = text[w.end : words[i + 1].start] if i + 1 < len(words) else ""
        if i + 1 == len(words) or "\n" in after or (w.text in SENTENCE_ENDS and after[:1].isspace()):
            out.append(range(start, i + 1))
            start = i + 1
    return out
