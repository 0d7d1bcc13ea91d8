"""Tokenization, and first-sub-token labels: how a word-level tag becomes a label the model can learn.

The model reads sub-tokens (WordPiece, byte-level BPE or unigram pieces), but tags belong to words. So each
word's tag is put on its *first* sub-token, and every other position gets IGNORE_INDEX, which the loss skips:

    words     Book      a      table  in     Strasbourg
    tokens    [CLS]  book  a  table  in  st  ##ras  ##bourg  [SEP]
    labels    -100   O     O  O      O   B-LOC -100  -100    -100

so the loss sees each word exactly once (`labels`), and a prediction is read back from the same place (the
model's output at `first_positions`).

    tokenizer = WordTokenizer(Tokenizer.from_file("weights/all-MiniLM-L6-v2/tokenizer.json"))
    enc, = tokenizer.encode([["Book", "a", "table", "in", "Strasbourg"]], max_len=128)
    labels(enc, ["O", "O", "O", "O", "B-LOC"], {"O": 0, "B-LOC": 1})

The tokenizer is the checkpoint's own, run by the `tokenizers` library, so the ids are the ones the checkpoint
was trained on. A word that normalises to nothing (a control character) still gets one [UNK] position, so every
word keeps one prediction. Raw text is split into words here too (`split_text`).
"""

import unicodedata
from dataclasses import dataclass
from typing import Mapping, NamedTuple, Sequence

from tokenizers import PreTokenizedString, pre_tokenizers

from .guards.errors import UserError
from .model import IGNORE_INDEX


@dataclass
class Encoding:
    """One sentence (or any run of words) as the model sees it."""

    input_ids: list[int]  # [CLS] sub-tokens... [SEP], unpadded
    word_ids: list[int | None]  # index of each position's word; None for [CLS]/[SEP]
    first_positions: list[int]  # position of the first sub-token of each word that kept one, in order
    truncated: bool  # some sub-tokens did not fit in max_len


class Word(NamedTuple):
    """A word of raw text: `text == original[start:end]`, offsets in Python characters (code points)."""

    text: str
    start: int
    end: int


BERT_SPECIALS = ("[CLS]", "[SEP]", "[PAD]", "[UNK]")  # their names in a WordPiece vocabulary


class WordTokenizer:
    """A checkpoint's own tokenizer (the `tokenizers` library's: `backend`), and how words become sub-tokens
    and back."""

    def __init__(self, backend, specials=BERT_SPECIALS, prefix=""):
        """`specials`: the names of [CLS], [SEP], [PAD], [UNK]. `prefix`: put before each word (a tokenizer that
        marks where words start wants the space they had in pretraining: extensions/family_tokenizers.py)."""
        self.backend = backend
        backend.no_padding()  # the batches pad themselves; published files often pad to a fixed length
        backend.no_truncation()
        # token_to_id, not get_vocab: the latter builds a Python dict of the whole vocabulary.
        ids = [backend.token_to_id(t) for t in specials]
        if None in ids:
            raise ValueError("the vocabulary lacks the special tokens " + ", ".join(specials))
        self.cls_id, self.sep_id, self.pad_id, self.unk_id = ids
        # Whether the model ever sees a word's case (an uncased checkpoint's normaliser erases it).
        self.lowercases = backend.normalizer is not None and backend.normalizer.normalize_str("A") == "a"
        self.prefix = prefix
        # Raw text is cut into words where BERT cuts it (whitespace and punctuation) for every tokenizer: NER
        # data is cut that way, and the pre-tokenizers that mark word starts would keep "Paris." whole.
        self.splitter = backend.pre_tokenizer if not prefix and backend.pre_tokenizer else \
            pre_tokenizers.BertPreTokenizer()

    def subtokens(self, sentences):
        """(ids, word_ids) per sentence, without [CLS]/[SEP], every word owning at least one position."""
        # One batched call, run in parallel by the library; "Paris." is still two sub-tokens of one word.
        if self.prefix:
            sentences = [[self.prefix + w for w in words] for words in sentences]
        encodings = self.backend.encode_batch(sentences, is_pretokenized=True, add_special_tokens=False)
        out = []
        for words, e in zip(sentences, encodings):
            ids, word_ids = e.ids, e.word_ids
            if len(set(word_ids)) < len(words):  # some word produced no token: give it an [UNK]
                ids, word_ids = self._fill_empty_words(ids, word_ids, len(words))
            out.append((ids, word_ids))
        return out

    def _fill_empty_words(self, ids, word_ids, n_words):
        pieces = [[] for _ in range(n_words)]
        for token, word in zip(ids, word_ids):
            pieces[word].append(token)
        pieces = [p or [self.unk_id] for p in pieces]
        return [t for p in pieces for t in p], [w for w, p in enumerate(pieces) for _ in p]

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


def labels(enc: Encoding, tags: Sequence[str], tag_to_id: Mapping[str, int]):
    """The rule: each word's tag id on its first sub-token, IGNORE_INDEX everywhere else (and for a tag that has
    no id). One label per position of `enc`."""
    kept = len(enc.first_positions)
    if len(tags) < kept or (not enc.truncated and len(tags) != kept):
        raise ValueError(f"{len(tags)} tags for an encoding of {kept} words")
    out = [IGNORE_INDEX] * len(enc.input_ids)
    for position, tag in zip(enc.first_positions, tags):
        out[position] = tag_to_id.get(tag, IGNORE_INDEX)
    return out


def room(max_len):
    """Sub-tokens that fit between [CLS] and [SEP]."""
    if max_len < 3:
        raise UserError(f"max_len must be at least 3 ([CLS], one sub-token, [SEP]), not {max_len}")
    return max_len - 2


# --- raw text at inference time: words with character offsets --------------------------------------------

def split_text(tokenizer, text: str) -> list[Word]:
    """Raw text -> its words as BERT splits the *normalised* text ("Paris." is "Paris" and ".", a CJK character a
    word, a control character no word), with offsets into `text` in characters (the library tracks how
    normalising moved each one)."""
    return [Word(text[start:end], start, end) for start, end in words_between(tokenizer, text, 0, len(text))]


def words_between(tokenizer, text, start, end):
    """(start, end) in `text` of each word of text[start:end]."""
    pre = PreTokenizedString(text[start:end])
    if tokenizer.backend.normalizer is not None:
        pre.normalize(tokenizer.backend.normalizer.normalize)
    tokenizer.splitter.pre_tokenize(pre)
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
