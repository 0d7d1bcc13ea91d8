"""From examples to padded tensor batches: ids, labels with IGNORE_INDEX wherever nothing is scored, batch order.

Length bucketing: a batch costs what its longest sentence costs, so sentences of similar length go together.
Sorting the whole split would make every epoch's batches the same and their order predictable, which hurts
SGD. So: shuffle, sort by length within large chunks only, cut into batches, shuffle the batches.
"""

import copy
import random
from dataclasses import dataclass, field

import torch

from .model import IGNORE_INDEX
from .tokenization import labels

CHUNK_BATCHES = 50  # sort within chunks of this many batches: padding falls, order stays random


@dataclass
class SplitIds:
    """One split as lists of ids, ready to batch."""

    input_ids: list[list[int]]
    first_positions: list[list[int]]  # where each word's prediction is read from
    tags: list[list[int]] | None  # per position, IGNORE_INDEX where unlabelled; None without a token task
    labels: list[int] | None  # per sentence; None without a sentence task
    n_truncated: int  # sentences cut at max_len
    pad_id: int  # the tokenizer's [PAD], which fills batches up to their longest sentence
    # More integer inputs per sentence by name, padded with 0 in a batch (word shapes, windows: extensions/)
    extra: dict[str, list[list[int]]] = field(default_factory=dict)

    def __len__(self):
        return len(self.input_ids)


def encode_split(tokenizer, examples, label_vocab, tag_vocab, max_len, label=labels, encodings=None):
    """Ids and label ids of every example, each cut at `max_len` positions. `label`: the rule that puts a
    sentence's tags on its positions; `encodings`: the examples' encodings, made another way (extensions/context.py)."""
    if encodings is None:
        encodings = tokenizer.encode([list(ex.words) for ex in examples], max_len=max_len)
    tags = None
    if tag_vocab is not None:
        tag_to_id = {name: i for i, name in enumerate(tag_vocab.names)}
        tags = [label(enc, ex.tags, tag_to_id) for enc, ex in zip(encodings, examples)]
    label_ids = [label_vocab.id(ex.label) for ex in examples] if label_vocab is not None else None
    return SplitIds([e.input_ids for e in encodings], [e.first_positions for e in encodings], tags, label_ids,
                    sum(e.truncated for e in encodings), tokenizer.pad_id)


@dataclass
class Batch:
    index: list[int]  # which sentences of the split, in batch order
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T), 1 = real token
    labels: torch.Tensor | None  # (B,)
    tags: torch.Tensor | None  # (B, T)
    words: torch.Tensor  # (B, W): each word's first sub-token position, -1 after a sentence's last word
    extra: dict = field(default_factory=dict)  # name -> (B, .): the split's `extra` inputs, padded with 0

    def to(self, device):
        """The same batch with its tensors on `device` (and whatever else a caller noted on it)."""
        moved = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(moved, name, value.to(device, non_blocking=True))
        moved.extra = {name: value.to(device, non_blocking=True) for name, value in self.extra.items()}
        return moved


def batch_indices(lengths, batch_size, rng=None):
    """Sentence indices per batch. With `rng` (training): bucketed and shuffled; without: sorted by length."""
    order = list(range(len(lengths)))
    if rng is None:
        order.sort(key=lambda i: lengths[i])
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(order)
    chunk = batch_size * CHUNK_BATCHES
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def pad(rows, value, width=None):
    """Lists of ids -> one (B, width) tensor, each row filled up with `value` (width: the longest row)."""
    width = max(len(r) for r in rows) if width is None else width
    # One tensor from padded lists: filling rows slice by slice costs more than heads on stored states.
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def attention_mask(rows):
    """(B, T): 1 on the real tokens of each row, 0 on its padding."""
    lengths = torch.tensor([len(r) for r in rows])
    return (torch.arange(int(lengths.max()))[None, :] < lengths[:, None]).long()


def collate(split: SplitIds, index):
    rows = [split.input_ids[i] for i in index]
    input_ids = pad(rows, split.pad_id)  # (B, T)
    tags = None if split.tags is None else pad([split.tags[i] for i in index], IGNORE_INDEX, input_ids.shape[1])
    labels = None if split.labels is None else torch.tensor([split.labels[i] for i in index])
    words = pad([split.first_positions[i] for i in index], -1)  # (B, W)
    extra = {name: pad([values[i] for i in index], 0) for name, values in split.extra.items()}
    return Batch(list(index), input_ids, attention_mask(rows), labels, tags, words, extra)


def batches(split: SplitIds, batch_size, rng=None):
    lengths = [len(ids) for ids in split.input_ids]
    return [collate(split, index) for index in batch_indices(lengths, batch_size, rng)]


def seeded_rng(seed, epoch, stream=0):
    """The batch-order RNG of one epoch (and one source, `stream`): a resumed or repeated run sees exactly
    the same batches."""
    return random.Random(seed * 100_003 + epoch + stream * 1_000_003)
