"""Tokenization, and first-sub-token labels: how a word-level tag becomes a label the model can learn.

The model reads sub-tokens (WordPiece, byte-level BPE or unigram pieces), but tags belong to words. So each
word's tag is put on its *first* sub-token, and every other position gets IGNORE_INDEX, which the loss skips:

    words     Book      a      table  in     Strasbourg
    tokens    [CLS]  book  a  table  in  st  ##ras  ##bourg  [SEP]
    labels    -100   O     O  O      O   B-LOC -100  -100    -100

so the loss sees each word exactly once, and a prediction is read back from the same place (the
model's output at `first_positions`). With `all_subtokens`, continuations are labelled too (as HF's
run_ner does): the pieces of a `B-X` word after the first become `I-X`.

    aligner = Aligner.from_checkpoint("weights/all-MiniLM-L6-v2")
    enc, = aligner.encode([["Book", "a", "table", "in", "Strasbourg"]], max_len=128)
    aligner.labels(enc, ["O", "O", "O", "O", "B-LOC"], {"O": 0, "B-LOC": 1})

The tokenizer is the checkpoint's own, run by the `tokenizers` library: its tokenizer.json, or BERT's
WordPiece rebuilt from vocab.txt exactly like its BertTokenizer, or RoBERTa's byte-level BPE from vocab.json
+ merges.txt; so the ids match what the checkpoint was trained on. [CLS] / [SEP] / [PAD] / [UNK] are
<s> / </s> / <pad> / <unk> for RoBERTa and XLM-R. Two details keep one prediction per word: a word that
normalises to nothing (a control character, a zero-width space) still gets one [UNK] position, and training
cuts a sentence longer than `max_len` (and says so).

Raw text at inference time is split here too, exactly as the tokenizer splits it, and long input is read in
overlapping windows of whole words, so any length works and no word is lost:

    words = split_text(aligner, text)                   # list[Word(text, start, end)], as BERT splits it
    wins = windows(aligner, [w.text for w in words], max_len=128, stride=32)   # [(first word, Encoding)]

(inference.py merges the windows' scores back into one row per word and turns tags into spans.)

So at inference a sentence is read with its neighbours in the text around it. Training can read each sentence
of a document the same way (`in_context`, --context): the window holds the sentence and as many
neighbouring words of its document as fit, and `sentence_view` keeps only the sentence's own words labelled.
"""

import unicodedata
from dataclasses import dataclass
from typing import Mapping, NamedTuple, Sequence

import numpy as np
from tokenizers import PreTokenizedString, models, pre_tokenizers

from .errors import UserError
from .model import IGNORE_INDEX
from .tokenizer_files import read_tokenizer


@dataclass
class Encoding:
    """One sentence (or one inference window) as the model sees it."""

    input_ids: list[int]  # [CLS] sub-tokens... [SEP], unpadded
    word_ids: list[int | None]  # index of each position's word; None for [CLS]/[SEP] (and sentence_view's context)
    first_positions: list[int]  # position of the first sub-token of each word that kept one, in order
    truncated: bool  # some sub-tokens did not fit in max_len


class Word(NamedTuple):
    """A word of raw text: `text == original[start:end]`, offsets in Python characters (code points)."""

    text: str
    start: int
    end: int


SPECIALS = (("[CLS]", "[SEP]", "[PAD]", "[UNK]"),  # BERT, DistilBERT, ELECTRA
            ("<s>", "</s>", "<pad>", "<unk>"))  # RoBERTa, XLM-R (fairseq's names)


SEGMENT = 1 << 16  # characters of raw text split at once (split_text)
WORD_CHARS = 1 << 14  # characters of one word that inference tokenizes (windows)


class Aligner:
    """A checkpoint's own tokenizer, and how words become sub-tokens and back.

    WordPiece marks a word's *continuations* (##ing); byte-level BPE (RoBERTa) and SentencePiece unigram (XLM-R)
    mark its *start* instead, with the space before it (Ġ, ▁). In pretraining nearly every word followed a
    space, so a word tokenized alone, without one, gets other pieces than it had there ("Paris" -> P, aris
    instead of ĠParis): the first word of every sentence and every word split off mid-text ("Paris" in
    "Paris.") would be read in a form the model rarely saw. So for those tokenizers each word is encoded with
    a space before it (`prefix`), the way HF's add_prefix_space does; the same words then get the same pieces
    in training and at inference, wherever they stand.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        # token_to_id, not get_vocab: the latter builds a Python dict of the whole vocabulary.
        ids = next((ids for names in SPECIALS if None not in (ids := [tokenizer.token_to_id(t) for t in names])), None)
        if ids is None:
            raise ValueError("the vocabulary lacks the special tokens " + " or ".join(", ".join(n) for n in SPECIALS))
        self.cls_id, self.sep_id, self.pad_id, self.unk_id = ids
        # Whether the model ever sees a word's case (an uncased checkpoint's normaliser erases it: wordshape.py).
        self.lowercases = tokenizer.normalizer is not None and tokenizer.normalizer.normalize_str("A") == "a"
        marks_starts = isinstance(tokenizer.model, (models.BPE, models.Unigram))
        self.prefix = " " if marks_starts else ""
        # Raw text is cut into words where BERT cuts it (whitespace and punctuation) for every tokenizer: NER
        # data is cut that way, and the byte-level and unigram pre-tokenizers would keep "Paris." whole.
        self.splitter = tokenizer.pre_tokenizer if not marks_starts and tokenizer.pre_tokenizer else \
            pre_tokenizers.BertPreTokenizer()

    @classmethod
    def from_checkpoint(cls, directory, vocab_size=None):
        """The checkpoint's own tokenizer (tokenizer_files.py says which files). Given the model's `vocab_size`,
        every id the tokenizer can produce must have a row in its embedding table."""
        tokenizer, path = read_tokenizer(directory)
        try:
            aligner = cls(tokenizer)
        except ValueError as e:
            raise UserError(str(e), path=path) from None
        ids = max(tokenizer.get_vocab().values()) + 1  # ids need not be contiguous: the largest needs a row
        if vocab_size is not None and ids > vocab_size:
            raise UserError(f"holds {ids} tokens but the model's config.json has vocab_size {vocab_size}", path=path)
        return aligner

    def subtokens(self, sentences):
        """(ids, word_ids) per sentence, without [CLS]/[SEP], every word owning at least one position."""
        # One batched call: the Rust side normalises, splits and runs the tokenizer's model for all sentences
        # in parallel. Each word still goes through the pre-tokenizer, so "Paris." is two sub-tokens of one word.
        if self.prefix:
            sentences = [[self.prefix + w for w in words] for words in sentences]
        encodings = self.tokenizer.encode_batch(sentences, is_pretokenized=True, add_special_tokens=False)
        out = []
        for words, e in zip(sentences, encodings):
            ids, word_ids = e.ids, e.word_ids
            if len(set(word_ids)) < len(words):  # some word produced no token: give it an [UNK]
                ids, word_ids = self._fill_empty_words(ids, word_ids, len(words))
            out.append((ids, word_ids))
        return out

    def _fill_empty_words(self, ids, word_ids, n_words):
        filled_ids, filled_words = [], []
        at = 0
        for word in range(n_words):
            if at == len(ids) or word_ids[at] != word:
                filled_ids.append(self.unk_id)
                filled_words.append(word)
            while at < len(ids) and word_ids[at] == word:
                filled_ids.append(ids[at])
                filled_words.append(word)
                at += 1
        return filled_ids, filled_words

    def wrap(self, ids, word_ids, truncated):
        """Add [CLS]/[SEP] around content that already fits, and find each word's first position."""
        previous = [None] + word_ids[:-1]
        # +1: position 0 is [CLS]. Word ids are non-decreasing, so a word starts wherever the id changes.
        first = [i + 1 for i, (w, p) in enumerate(zip(word_ids, previous)) if w != p]
        return Encoding([self.cls_id, *ids, self.sep_id], [None, *word_ids, None], first, truncated)

    def encode(self, sentences: list[list[str]], max_len: int = 512) -> list[Encoding]:
        """Encode pre-split sentences for training, truncating each to `max_len` positions."""
        fits = room(max_len)
        encodings = []
        for ids, word_ids in self.subtokens(sentences):
            truncated = len(ids) > fits
            encodings.append(self.wrap(ids[:fits], word_ids[:fits], truncated))
        return encodings

    def labels(self, enc: Encoding, tags: Sequence[str], tag_to_id: Mapping[str, int], all_subtokens=False):
        """Label ids, one per position of `enc`. Unlabelled positions and unknown tags get IGNORE_INDEX.

        With `all_subtokens`, continuation sub-tokens are labelled too (as HF's run_ner does), with the
        inside tag: the sub-tokens of a `B-X` word after its first are `I-X`. If `I-X` has no id, they
        are ignored rather than labelled as `B-X`, which would teach the model a second entity start.
        """
        kept = len(enc.first_positions)
        if len(tags) < kept or (not enc.truncated and len(tags) != kept):
            raise ValueError(f"{len(tags)} tags for an encoding of {kept} words")
        out = [IGNORE_INDEX] * len(enc.input_ids)
        if not all_subtokens:
            for position, tag in zip(enc.first_positions, tags):
                out[position] = tag_to_id.get(tag, IGNORE_INDEX)
            return out
        previous = None
        for position, word in enumerate(enc.word_ids):
            if word is None:
                continue
            tag = tags[word]
            if word == previous and tag.startswith("B-"):
                tag = "I-" + tag[2:]
            out[position] = tag_to_id.get(tag, IGNORE_INDEX)
            previous = word
        return out


def room(max_len):
    """Sub-tokens that fit between [CLS] and [SEP]."""
    if max_len < 3:
        raise UserError(f"max_len must be at least 3 ([CLS], one sub-token, [SEP]), not {max_len}")
    return max_len - 2


# --- raw text at inference time: words with character offsets, then overlapping windows ------------

def split_text(aligner, text: str) -> list[Word]:
    """Split raw text into words as BERT does, with character offsets into `text`.

    Splitting the *normalised* text (what the checkpoint's tokenizer does) means that for BERT CJK
    characters become one word each, "Paris." becomes "Paris" and ".", and text that normalises away (control
    characters, zero-width spaces) belongs to no word. The tokenizers library tracks how normalising
    moved every character, so offsets point into the original string; we ask for them in characters
    (code points, as Python indexes strings), not in UTF-8 bytes. Byte-level BPE and unigram tokenizers cut
    the words the same way (`Aligner.splitter`), after their own normaliser if they have one.

    A long text is split a segment of at most SEGMENT characters at a time (cut at whitespace where there is
    some, else inside a run of ASCII letters and digits, whose two halves are joined again; a text with
    neither is cut where it must), so the memory it takes follows the segment, not the text.
    """
    bounds = []
    for start, end in _segments(text):
        part = _split(aligner, text, start, end)
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


def _split(aligner, text, start, end):
    """(start, end) in `text` of each word of text[start:end]."""
    pre = PreTokenizedString(text[start:end])
    if aligner.tokenizer.normalizer is not None:
        pre.normalize(aligner.tokenizer.normalizer.normalize)
    aligner.splitter.pre_tokenize(pre)
    bounds = [(start + a, start + b) for _, (a, b), _ in
              pre.get_splits(offset_referential="original", offset_type="char")]
    words = []
    for i, (first, last) in enumerate(bounds):
        # Accent stripping deletes combining marks, and a deleted mark at the end of a word falls
        # outside its offsets: "Jose\u0301" would map to "Jose". Take such marks back into the word.
        limit = bounds[i + 1][0] if i + 1 < len(bounds) else end
        while last < limit and unicodedata.category(text[last]).startswith("M"):
            last += 1
        if words and first < words[-1][1]:
            # One character that normalises to several words ("‥" -> ". .") stays one word of the text.
            previous = words.pop()
            first, last = previous[0], max(last, previous[1])
        words.append((first, last))
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
    # A word longer than WORD_CHARS characters is tokenized from its start only: the window keeps at most its
    # first `fits` sub-tokens, which lie far inside that start (and WordPiece makes any word of over 100
    # characters a single [UNK] anyway), so a word of megabytes costs no more than one of kilobytes.
    (ids, word_ids), = aligner.subtokens([[w[:WORD_CHARS] for w in words]])
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


# --- a sentence in its document: the neighbouring sentences as context ----------------------------------

def in_context(aligner, documents: list[list[list[str]]], window: int, max_len: int) \
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
    pieces = iter(aligner.subtokens(sentences))
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
                out.append((s, aligner.wrap(ids[before[s] : end].tolist(), (word_ids[before[s] : end] - s).tolist(),
                                            bool(end < before[e])), range(e - s)))
                continue
            spare = fits - own
            left = min(before[s], max(spare // 2, spare - (before[-1] - before[e])))
            first = int(np.searchsorted(before, before[s] - left, side="left"))  # whole words that fit before
            end = int(np.searchsorted(before, before[e] + spare - left, side="right")) - 1  # ... and after
            out.append((first, aligner.wrap(ids[before[first] : before[end]].tolist(),
                                            (word_ids[before[first] : before[end]] - first).tolist(), False),
                        range(s - first, e - first)))
    return out


def sentence_view(enc: Encoding, own: range) -> Encoding:
    """A sentence in its context (`in_context`) as training labels it and evaluation reads it: the same
    positions, but only the sentence's own words have word ids (from 0) and first positions; the context's
    positions have none, like [CLS] and [SEP], so they are never labelled, never in the loss, never scored."""
    word_ids = [w - own.start if w is not None and w in own else None for w in enc.word_ids]
    return Encoding(enc.input_ids, word_ids, enc.first_positions[own.start : own.stop], enc.truncated)
