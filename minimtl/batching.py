"""From examples to padded tensor batches: encode once, batch by length, and take turns between sources.

Kept apart from machinery/data.py (which reads and checks files, knowing nothing of tokenizers) because this
is where text meets the model: sub-token ids, labels aligned with IGNORE_INDEX, and the order of batches.

Length bucketing: transformer cost grows with the padded length of a batch, so batching sentences of
similar length wastes little compute on padding. Sorting the whole split would make every epoch's
batches identical and their order predictable (short sentences first), which hurts SGD. So: shuffle,
sort by length only within large chunks, cut into batches, shuffle the batches.

Task sampling, when one model learns from several corpora. Real corpora are disjoint: CoNLL-2003 has
entities and no topics, AG News topics and no entities. So each batch holds one source's sentences (every
sentence in it carries labels for that source's task, and the lengths are alike, so padding stays low), and
the sources take turns:

    proportional   p_i = n_i / sum n        every batch of every source exactly once per epoch, shuffled
    uniform        p_i = 1 / S              small sources are seen as often as large ones
    temperature    p_i = n_i^(1/T) / sum    between the two: T = 1 is proportional, T -> inf uniform
                                            (MT-DNN, jiant; Arivazhagan et al. 2019 for multilingual MT)

n_i counts training sentences. An epoch has as many batches as all sources together, whatever the
sampling, so "epoch" always means the same amount of computation. With uniform or temperature sampling a
source drawn more often than it has batches starts its (shuffled) list again, and one drawn less often
leaves some of its batches for the next epoch's shuffle.
"""

import math
import random
from dataclasses import dataclass

import torch

from .model import IGNORE_INDEX
from .tokenization import in_context, sentence_view
from .wordshape import NONE, position_shapes, word_shape

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
    shape_ids: list[list[int]] | None = None  # per position, its word's shape (wordshape.py); None without shapes

    def __len__(self):
        return len(self.input_ids)


def encode_split(aligner, examples, label_vocab, tag_vocab, max_len, all_subtokens=False, word_shapes=False,
                 context=None):
    """Ids, label ids (and with `word_shapes`, shape ids) of every example, each cut at `max_len` positions.

    `context`: None, or the window (positions) in which each sentence of a document is read with its
    neighbours (tokenization.in_context); a document is a run of consecutive examples with the same
    `document`, and an example without one (None) is read alone. Only the sentence's own words are labelled
    and scored, so the split's `first_positions` are its own words' and the context carries IGNORE_INDEX."""
    sentences = [list(ex.words) for ex in examples]
    if context is None:
        encodings = aligner.encode(sentences, max_len=max_len)
        shapes = [position_shapes(e.word_ids, [word_shape(w) for w in words]) for e, words in
                  zip(encodings, sentences)] if word_shapes else None
    else:
        documents = [[sentences[i] for i in document] for document in by_document(examples)]
        in_documents = in_context(aligner, documents, context, max_len)
        encodings = [sentence_view(enc, own) for _, enc, own in in_documents]
        shapes = None
        if word_shapes:
            # The context's words have their shapes too: they are read, only never labelled.
            per_document = [[word_shape(w) for words in document for w in words] for document in documents]
            owner = [d for d, document in enumerate(documents) for _ in document]
            shapes = [position_shapes(enc.word_ids, per_document[d][first:])
                      for d, (first, enc, _) in zip(owner, in_documents)]
    tags = None
    if tag_vocab is not None:
        tag_to_id = {name: i for i, name in enumerate(tag_vocab.names)}
        tags = [aligner.labels(enc, ex.tags, tag_to_id, all_subtokens) for enc, ex in zip(encodings, examples)]
    labels = [label_vocab.id(ex.label) for ex in examples] if label_vocab is not None else None
    return SplitIds([e.input_ids for e in encodings], [e.first_positions for e in encodings], tags, labels,
                    sum(e.truncated for e in encodings), aligner.pad_id, shapes)


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


@dataclass
class Batch:
    index: list[int]  # which sentences of the split, in batch order
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T), 1 = real token
    labels: torch.Tensor | None  # (B,)
    tags: torch.Tensor | None  # (B, T)
    words: torch.Tensor  # (B, W): each word's first sub-token position, -1 after a sentence's last word
    shape_ids: torch.Tensor | None = None  # (B, T): each position's word shape; None without shapes

    def to(self, device):
        move = lambda t: None if t is None else t.to(device, non_blocking=True)
        return Batch(self.index, move(self.input_ids), move(self.attention_mask), move(self.labels), move(self.tags),
                     move(self.words), move(self.shape_ids))


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
    # One tensor from padded Python lists: filling rows one slice at a time cost more than the heads
    # themselves when they train on cached features.
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
    shapes = None if split.shape_ids is None else pad([split.shape_ids[i] for i in index], NONE, input_ids.shape[1])
    return Batch(list(index), input_ids, attention_mask(rows), labels, tags, words, shapes)


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


# --- several sources: which one each training batch comes from (see the module docstring) ----------------

def source_probabilities(sizes, how, temperature=2.0):
    """The probability of drawing each source, from its size (training sentences)."""
    if how == "uniform":
        weights = [1.0] * len(sizes)
    elif how == "temperature":
        # n^(1/T) computed as exp(log(n)/T - the largest of those): a small T would overflow a float
        # (120000 ** 100), and dividing every weight by the largest leaves the probabilities unchanged.
        logs = [math.log(n) / temperature for n in sizes]
        top = max(logs)
        weights = [math.exp(x - top) for x in logs]
    else:
        weights = [float(n) for n in sizes]
    total = sum(weights)
    return [w / total for w in weights]


def interleave(per_source, probabilities, rng):
    """One epoch's (source index, batch) pairs from each source's own (already shuffled) batch list.

    `probabilities` None means proportional: one pass over every batch, shuffled (drawing without
    replacement, so each source's share is exact, not just expected).
    """
    if len(per_source) == 1:
        return [(0, b) for b in per_source[0]]
    if probabilities is None:
        order = [(i, b) for i, batches in enumerate(per_source) for b in batches]
        rng.shuffle(order)
        return order
    n_steps = sum(len(batches) for batches in per_source)
    drawn = rng.choices(range(len(per_source)), weights=probabilities, k=n_steps)
    taken = [0] * len(per_source)
    order = []
    for i in drawn:
        order.append((i, per_source[i][taken[i] % len(per_source[i])]))
        taken[i] += 1
    return order


def epoch_batches(sources, cfg, epoch):
    """The epoch's (source, batch) pairs: each source's batches bucketed by length, then interleaved."""
    per_source = [batches(s.ids["train"], cfg.batch_size, seeded_rng(cfg.seed, epoch, i))
                  for i, s in enumerate(sources)]
    probabilities = None if cfg.sampling == "proportional" else \
        source_probabilities([len(s.splits.train) for s in sources], cfg.sampling, cfg.temperature)
    order = interleave(per_source, probabilities, seeded_rng(cfg.seed, epoch, len(sources)))
    return [(sources[i], batch) for i, batch in order]


def shard(micro_batches, rank=0, world=1):
    """Process `rank`'s micro-batches of an epoch under torchrun, as (source, batch, counts); all of them,
    each counting, in a plain run.

    Process r takes items r, r + N, r + 2N, ...: step s then covers items s*N*A .. (s+1)*N*A - 1 of the
    one ordered list across the processes, the same items as step s of a single process with
    accumulation N*A. When the count does not divide by N, the processes that come up one short get a
    filler (the last item again, counts False): its loss is multiplied by 0, so it adds nothing, but the
    process still takes part in that step's gradient exchange, which every process must join.
    """
    mine = [(source, batch, True) for source, batch in micro_batches[rank::world]]
    missing = -(-len(micro_batches) // world) - len(mine)  # ceil(n / N) - own: 0 or 1
    return mine + [(source, batch, False) for source, batch in micro_batches[-1:]] * missing


def steps_per_epoch(sources, cfg, world=1):
    """Optimizer steps per epoch: each takes grad_accum micro-batches from each of the `world` processes."""
    n_batches = sum(math.ceil(len(s.ids["train"]) / cfg.batch_size) for s in sources)
    return math.ceil(n_batches / (cfg.grad_accum * world))
