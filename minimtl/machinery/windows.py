"""Raw text at inference time: words with character offsets, overlapping windows, entity spans.

    words = split_text(aligner, text)                   # list[Word(text, start, end)], as BERT splits it
    wins = windows(aligner, [w.text for w in words], max_len=128, stride=32)   # [(first word, Encoding)]
    rows = merge_windows(wins, per_window_scores, len(words))   # one score row per word
    found = spans(text, words, tags, confidences)       # list[Span] with character offsets

Any text length works: long input is read in overlapping windows of whole words, and each word takes its
scores from the window where it has the most context, so no word is dropped or predicted twice.
"""

import unicodedata
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch
from tokenizers import PreTokenizedString

from ..bio import chunks
from ..tokenization import Encoding, room
from .errors import UserError


class Word(NamedTuple):
    """A word of raw text: `text == original[start:end]`, offsets in Python characters (code points)."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Span:
    """An entity found in raw text: words first..last (inclusive) and the characters they cover."""

    type: str
    first_word: int
    last_word: int
    start: int
    end: int
    text: str  # original[start:end], inner whitespace included
    confidence: float  # mean probability of the entity's word tags


def split_text(aligner, text: str) -> list[Word]:
    """Split raw text into words exactly as BERT does, with character offsets into `text`.

    Splitting the *normalised* text (what the checkpoint's tokenizer does) means CJK characters
    become one word each, "Paris." becomes "Paris" and ".", and text that normalises away (control
    characters, zero-width spaces) belongs to no word. The tokenizers library tracks how normalising
    moved every character, so offsets point into the original string; we ask for them in characters
    (code points, as Python indexes strings), not in UTF-8 bytes.
    """
    pre = PreTokenizedString(text)
    pre.normalize(aligner.tokenizer.normalizer.normalize)
    aligner.tokenizer.pre_tokenizer.pre_tokenize(pre)
    bounds = [span for _, span, _ in pre.get_splits(offset_referential="original", offset_type="char")]
    words = []
    for i, (start, end) in enumerate(bounds):
        # Accent stripping deletes combining marks, and a deleted mark at the end of a word falls
        # outside its offsets: "Jose\u0301" would map to "Jose". Take such marks back into the word.
        limit = bounds[i + 1][0] if i + 1 < len(bounds) else len(text)
        while end < limit and unicodedata.category(text[end]).startswith("M"):
            end += 1
        words.append(Word(text[start:end], start, end))
    return words


def windows(aligner, words: list[str], max_len: int, stride: int) -> list[tuple[int, Encoding]]:
    """Overlapping windows covering every word: (index of the window's first word, its encoding).

    Each window holds whole words and at most `max_len` positions; consecutive windows share words
    worth up to `stride` sub-tokens. A word too long for any window keeps its leading sub-tokens.
    Input that fits in `max_len` gives one window, identical to `encode([words], max_len)[0]`.
    """
    fits = room(max_len)
    if not 0 <= stride < fits:
        raise UserError(f"stride must be at least 0 and below max_len - 2 = {fits}, not {stride}")
    (ids, word_ids), = aligner.subtokens([words])
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
        out.append((first, aligner.wrap(window_ids, window_words, bool(cut[first:end].any()))))
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


def spans(text: str, words: Sequence[Word], tags: Sequence[str], confidences: Sequence[float]) -> list[Span]:
    """Entity spans from one tag and one confidence per word of `text` (as `Aligner.split_text` gave them).

    Invalid BIO sequences are read as seqeval's default mode does (see `minimtl.bio.chunks`).
    """
    if not len(words) == len(tags) == len(confidences):
        raise ValueError(f"{len(words)} words, {len(tags)} tags and {len(confidences)} confidences")
    out = []
    for kind, first, last in chunks(tags):
        start, end = words[first].start, words[last].end
        confidence = sum(float(c) for c in confidences[first : last + 1]) / (last - first + 1)
        out.append(Span(kind, first, last, start, end, text[start:end], confidence))
    return out
