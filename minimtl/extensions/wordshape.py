"""Word shapes: what an uncased tokenizer erases, given back to the model as one small learned embedding.

An uncased checkpoint lowercases (and strips accents from) every word before it is cut into sub-tokens,
so "Apple", "apple" and "APPLE" are the same ids, and capitalisation is the strongest single cue English has
for a name. So each word gets a *shape*, decided from its original text, one of a small fixed list:

    lower        apple, é, 4th        every letter that has a case is lowercase
    capitalised  Apple, A, 3M, Élan   the first cased letter is upper (or title) case, the others lower
    upper        APPLE, U.S., NATO    two or more cased letters, all upper case
    mixed        iPhone, McDonald     any other mix
    uncased      東京, القاهرة, 서울   letters, none of which has a case (most scripts have none)
    digits       1996, 3-1, 12.5      no letter, some digit
    other        ",", "--", 😀        no letter, no digit: punctuation, symbols, emoji

Combining marks (the accent of "e\u0301") have no case and are skipped, so a decomposed word has the shape of
its composed form. Every sub-token of a word gets the word's shape id (a word that tokenizes to nothing still
owns one [UNK] position, tokenization.py, and that position gets it); [CLS], [SEP], padding get NONE.

Each position's shape id rides in the batch beside its token id (`batch.extra["shape_ids"]`: `add_shape_ids`
puts them in a split). `WordShapes` is a table of one learned vector per shape, added to each sub-token's
representation where the run lets it learn (machinery/settings.recipe decides, and says so at the start of a
run):

- full fine-tuning and LoRA: to the encoder's input embeddings, beside the token-type row (the model's
  `embedding_input`), so every layer can use the case of every word;
- a frozen backbone: to what the heads read (the model's `head_input`), since a vector added inside a frozen
  encoder cannot learn there, and the frozen encoder's states are computed once and cached (features.py).

The table starts at zero. Adding zero changes nothing, so at step 0 the model computes exactly what the
pretrained one does (bit for bit: x + 0.0 == x), and training moves away from it only as far as the
gradients ask: the argument of LoRA's B = 0 (lora.py). A random start would instead shift every input
embedding of a pretrained encoder by noise it never saw.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

SHAPES = ("none", "lower", "capitalised", "upper", "mixed", "uncased", "digits", "other")
NONE, LOWER, CAPITALISED, UPPER, MIXED, UNCASED, DIGITS, OTHER = range(len(SHAPES))


def word_shape(word: str) -> int:
    """The shape id of one word, from its original text (before any normaliser lowercases it). One pass, in
    constant memory: a word of megabytes costs no more than its characters."""
    first_upper, later_upper, lower, letter, digit = None, False, False, False, False  # over the cased letters
    for c in word:
        if c.isupper() or c.istitle():  # title case: the one letter "ǅ" that starts a capitalised word
            upper = True
        elif c.islower():
            upper = False
        else:  # no case: a letter of a script without case, a digit, a combining mark, punctuation, ...
            letter, digit = letter or c.isalpha(), digit or c.isdigit()
            continue
        if first_upper is None:
            first_upper = upper
        else:
            later_upper = later_upper or upper
        lower = lower or not upper
    if first_upper is not None:
        if not later_upper:
            return CAPITALISED if first_upper else LOWER
        return UPPER if not lower else MIXED
    return UNCASED if letter else DIGITS if digit else OTHER


def add_shape_ids(split, encodings, words, firsts=None):
    """Put each position's shape id into `split` (batching.SplitIds), as its extra input "shape_ids"
    (`shape_rows` of the same arguments)."""
    split.extra["shape_ids"] = shape_rows(encodings, words, firsts)
    return split


def shape_rows(encodings, words, firsts=None):
    """Each encoding's shape id per position. For encoding i, `words[i]` holds the words (their original text)
    its `word_ids` count from `firsts[i]` (default 0): a sentence's own words, or the whole document or text of
    a window (the context's words have their shapes too: they are read, only never labelled). Each word
    list's shapes are computed once, however many encodings share it."""
    shapes = {}
    for ws in words:
        if id(ws) not in shapes:
            shapes[id(ws)] = [word_shape(w) for w in ws]
    return [position_shapes(enc.word_ids, shapes[id(ws)], first)
            for enc, ws, first in zip(encodings, words, firsts or [0] * len(encodings))]


def position_shapes(word_ids, shapes, first=0):
    """One shape id per position of an encoding: its word's shape (`shapes[first + word]`), NONE where word_ids
    has None ([CLS], [SEP])."""
    return [NONE if w is None else shapes[first + w] for w in word_ids]


class WordShapes(nn.Module):
    """A batch -> (B, T, dim), each position's shape vector (from `batch.extra["shape_ids"]`): one learned vector
    per shape, all zeros at the start; NONE stays zero. Handed to the model as its `embedding_input` or
    `head_input`."""

    def __init__(self, dim):
        super().__init__()
        # torch.zeros, not nn.Embedding's random init: the table starts at zero, and building it draws no random
        # number, so every other weight is initialised exactly as in a run without it.
        self.weight = nn.Parameter(torch.zeros(len(SHAPES), dim))

    def forward(self, batch):
        if "shape_ids" not in batch.extra:
            raise ValueError("this model adds word shapes: pass shape_ids (add_shape_ids)")
        # padding_idx: the NONE row gets no gradient, so special tokens and padding never get a shape.
        return F.embedding(batch.extra["shape_ids"], self.weight, padding_idx=NONE)
