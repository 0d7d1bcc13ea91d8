"""From examples to padded tensor batches: encode once, then batch by length.

Kept apart from data.py (which reads and checks files, knowing nothing of tokenizers) because this is
where text meets the model: sub-token ids, aligned labels, and batch order.

Length bucketing: transformer cost grows with the padded length of a batch, so batching sentences of
similar length wastes little compute on padding. Sorting the whole split would make every epoch's
batches identical and their order predictable (short sentences first), which hurts SGD. So: shuffle,
sort by length only within large chunks, cut into batches, shuffle the batches.
"""

import random
from dataclasses import dataclass

import torch

from ..model import IGNORE_INDEX

CHUNK_BATCHES = 50  # sort within windows of this many batches: padding falls, order stays random


@dataclass
class SplitIds:
    """One split as lists of ids, ready to batch."""

    input_ids: list[list[int]]
    first_positions: list[list[int]]  # where each word's prediction is read from
    tags: list[list[int]] | None  # per position, IGNORE_INDEX where unlabelled; None without a token task
    labels: list[int] | None  # per sentence; None without a sentence task
    n_truncated: int  # sentences cut at max_len
    pad_id: int  # the tokenizer's [PAD], which fills batches up to their longest sentence

    def __len__(self):
        return len(self.input_ids)


def encode_split(aligner, examples, label_vocab, tag_vocab, max_len, all_subtokens=False):
    encodings = aligner.encode([list(ex.words) for ex in examples], max_len=max_len)
    tags = None
    if tag_vocab is not None:
        tag_to_id = {name: i for i, name in enumerate(tag_vocab.names)}
        tags = [aligner.labels(enc, ex.tags, tag_to_id, all_subtokens) for enc, ex in zip(encodings, examples)]
    labels = [label_vocab.id(ex.label) for ex in examples] if label_vocab is not None else None
    return SplitIds([e.input_ids for e in encodings], [e.first_positions for e in encodings], tags, labels,
                    sum(e.truncated for e in encodings), aligner.pad_id)


@dataclass
class Batch:
    index: list[int]  # which sentences of the split, in batch order
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T), 1 = real token
    labels: torch.Tensor | None  # (B,)
    tags: torch.Tensor | None  # (B, T)
    words: torch.Tensor  # (B, W): each word's first sub-token position, -1 after a sentence's last word

    def to(self, device):
        move = lambda t: None if t is None else t.to(device, non_blocking=True)
        return Batch(self.index, move(self.input_ids), move(self.attention_mask), move(self.labels), move(self.tags),
                     move(self.words))


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


def collate(split: SplitIds, index):
    rows = [split.input_ids[i] for i in index]
    lengths = torch.tensor([len(r) for r in rows])
    T = int(lengths.max())
    # One tensor per field from padded Python lists: filling rows one slice at a time cost ~1.6 ms a batch,
    # which is most of an epoch when the heads train on cached features.
    pad = lambda lists, value, n=T: torch.tensor([x + [value] * (n - len(x)) for x in lists], dtype=torch.long)
    input_ids = pad(rows, split.pad_id)                                 # (B, T)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()  # (B, T)
    tags = None if split.tags is None else pad([split.tags[i] for i in index], IGNORE_INDEX)
    labels = None if split.labels is None else torch.tensor([split.labels[i] for i in index])
    firsts = [split.first_positions[i] for i in index]
    words = pad(firsts, -1, max(len(f) for f in firsts))  # (B, W)
    return Batch(list(index), input_ids, mask, labels, tags, words)


def batches(split: SplitIds, batch_size, rng=None):
    lengths = [len(ids) for ids in split.input_ids]
    return [collate(split, index) for index in batch_indices(lengths, batch_size, rng)]


def padding_fraction(batch_list):
    """Share of the positions in these batches that are padding."""
    total = sum(b.attention_mask.numel() for b in batch_list)
    return 1 - sum(int(b.attention_mask.sum()) for b in batch_list) / max(total, 1)


def seeded_rng(seed, epoch, stream=0):
    """The batch-order RNG of one epoch (and one source, `stream`): a resumed or repeated run sees exactly
    the same batches."""
    return random.Random(seed * 100_003 + epoch + stream * 1_000_003)
