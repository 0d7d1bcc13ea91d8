"""Long texts and documents: overlapping windows over many words, and each sentence read in its document.

The model reads at most max_len positions, and a sentence alone lacks what its neighbours say about it. Two
transforms of what the model reads, attached where text becomes encodings:

- at inference (machinery/predictor.py), a long text is split into words a segment at a time
  (`split_long_text`), and read in overlapping windows of whole words, so any length works and no word is
  lost; each word's scores come from the window where it has the most context (`windows`, `merge_windows`);
  the sentences of a text are so each other's context;
- in training (--context), each sentence of a document is read inside a window of its neighbouring words
  (`in_context`), and `sentence_view` keeps only the sentence's own words labelled and scored: the context's
  positions have no word, like [CLS] and [SEP].
"""

import numpy as np
import torch

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


def sentence_view(enc: Encoding, own: range) -> Encoding:
    """A sentence in its context (`in_context`) as training labels it and evaluation reads it: the same
    positions, but only the sentence's own words have word ids (from 0) and first positions; the context's
    positions have none, like [CLS] and [SEP], so they are never labelled, never in the loss, never scored."""
    word_ids = [w - own.start if w is not None and w in own else None for w in enc.word_ids]
    return Encoding(enc.input_ids, word_ids, enc.first_positions[own.start : own.stop], enc.truncated)
