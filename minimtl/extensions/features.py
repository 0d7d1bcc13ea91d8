"""The frozen-backbone feature cache.

With every encoder parameter frozen (and, being frozen, in eval mode: no dropout), the encoder is a fixed
function: a sentence's hidden states are the same in every epoch. Computing them once and training only
the heads on the stored states turns an N-epoch run into one encoder pass plus N cheap head passes.

What is stored is exactly what the heads read (`MultiTaskModel.features`): the last hidden state, or the
top k layers for a scalar mix. Only real tokens are kept, all sentences of a split one after the other, so a
sentence is one contiguous run of rows. Half precision halves the size (k layers of a whole corpus add up)
and costs nothing the heads can see: float16 keeps 11 significant bits, and the heads train in float32 on
the widened values.

Where the rows live:
- in memory, one flat tensor per split: a batch is one gather;
- in a file, when memory cannot hold them (`file`): the rows are written once and each batch reads its
  sentences back with one positioned read each. Plain reads, not a memory map: a mapped file's pages count
  as the process's own memory while they stay mapped, so a scan of a cache larger than memory would still
  grow the process; read pages belong to the kernel's page cache, which gives them back under pressure.
  The values are the same float16 bits either way, so both train the same model, bit for bit.

The cache holds tensors only, never the model: a run builds it when the whole encoder is frozen for an epoch
and drops it as soon as gradual unfreezing thaws a layer (machinery/run.py). It stands in for the encoder:
`CachedModel(model, cache)` is the model whose forward pass reads the stored states and runs only the heads
(MultiTaskModel.heads), for batches that say their source and split (`batch.source`, `batch.split`).
"""

import os
import time

import math
import torch
import torch.nn as nn

from ..batching import batches

ENCODE_BATCH = 64


class FeatureCache:
    """(source name, split name) -> the features of every real token of the split, and where each sentence
    starts: rows (N_tokens + 1, [k,] H), the last row zeros (what padding reads, as the encoder gives it)."""

    def __init__(self, model, sources, splits, log, dtype=torch.float16, file=None, pace=lambda batches: batches):
        """`file`: an open binary file to keep the rows in instead of memory (a temporary one: the caller
        decides where, and removes it). `pace(batches)`: the batches to encode, handed out as the caller wants
        them computed (machinery/threads.py sets the thread count that is fastest now)."""
        start = time.perf_counter()
        self.file, self.dtype, self.pace = file, dtype, pace
        self.row_shape = feature_shape(model)  # ([k,] H)
        self.row_bytes = self.token_bytes(model, dtype)
        self.states, end = {}, 0
        for s in sources:
            for split in splits:
                self.states[s.name, split] = self.encode(model, s.ids[split], end)
                end += self.rows_of(s.ids[split]) * self.row_bytes
        n = sum(len(starts) for _, starts in self.states.values())
        layers = model.layers
        log(f"feature cache: backbone frozen, encoded {n} sentences once in {time.perf_counter() - start:.1f}s "
            f"({'the last layer' if layers == 1 else f'the top {layers} layers'}, {end / 2**20:,.0f} MiB in "
            f"{str(dtype).removeprefix('torch.')}, {'on disk' if file else 'in memory'}); the heads train on the "
            "cached features")

    @staticmethod
    def rows_of(split):
        return sum(map(len, split.input_ids)) + 1  # every real token, and the zero row

    @staticmethod
    def token_bytes(model, dtype=torch.float16):
        return math.prod(feature_shape(model)) * torch.empty((), dtype=dtype).element_size()

    @staticmethod
    def size(model, sources, splits, dtype=torch.float16):
        """The bytes a cache of these splits takes, known before it is built: every real token's features
        (and one zero row per split), plus where each sentence starts."""
        return sum(FeatureCache.rows_of(s.ids[split]) * FeatureCache.token_bytes(model, dtype) + 8 * len(s.ids[split])
                   for s in sources for split in splits)

    @torch.inference_mode()
    def encode(self, model, split, offset):
        """Encode one split into memory, or into the file from byte `offset` on: (rows or offset, starts)."""
        lengths = torch.tensor([len(ids) for ids in split.input_ids])
        starts = torch.cumsum(lengths, 0) - lengths  # (S,): first row of each sentence
        rows = self.rows_of(split)
        device = next(model.parameters()).device
        if self.file is None:
            flat = torch.zeros((rows, *self.row_shape), dtype=self.dtype, device=device)
        else:  # the zero row past the last sentence, and with it the file's length
            os.pwrite(self.file.fileno(), bytes(self.row_bytes), offset + (rows - 1) * self.row_bytes)
        was_training = model.bert.training
        model.bert.eval()
        for batch in self.pace(batches(split, ENCODE_BATCH)):
            batch = batch.to(device)
            hidden = model.features(batch)  # (B, T, [k,] H)
            for row, i in enumerate(batch.index):
                mine = hidden[row, : lengths[i]].to(self.dtype)  # (length, [k,] H)
                if self.file is None:
                    flat[starts[i] : starts[i] + lengths[i]] = mine
                else:
                    os.pwrite(self.file.fileno(), as_bytes(mine.cpu()), offset + int(starts[i]) * self.row_bytes)
        model.bert.train(was_training)
        return (flat if self.file is None else offset), starts.to(device)

    def hidden(self, source, split, batch):
        """The cached features of `batch`, padded to (B, T, [k,] H) like the encoder's own output."""
        rows, starts = self.states[source, split]
        if self.file is not None:
            return widened(self.read(rows, starts, batch).to(starts.device))
        T = batch.input_ids.shape[1]
        positions = torch.arange(T, device=starts.device)
        at = starts[batch.index][:, None] + positions  # (B, T)
        real = batch.attention_mask.to(starts.device).bool()
        at = torch.where(real, at, len(rows) - 1)  # padding reads the zero row
        return widened(rows.index_select(0, at.flatten()).view(*at.shape, *self.row_shape))

    def read(self, offset, starts, batch):
        """`batch`'s rows from the file, one read per sentence, into zeros where the batch pads."""
        lengths = batch.attention_mask.sum(1).tolist()
        out = torch.zeros((len(lengths), batch.input_ids.shape[1], *self.row_shape), dtype=self.dtype)  # (B, T, [k,] H)
        for b, (i, n) in enumerate(zip(batch.index, lengths)):
            read = os.preadv(self.file.fileno(), [as_bytes(out[b, :n])], offset + int(starts[i]) * self.row_bytes)
            if read != n * self.row_bytes:
                raise OSError(f"the feature cache file ended early ({read} of {n * self.row_bytes} bytes)")
        return out


def widened(hidden):
    """Half-precision cached features (B, T, [k,] H) -> float32, what the heads compute with. Several layers are
    laid out one layer after the other in memory, (k, B, T, H), and returned as a (B, T, k, H) view of that:
    the heads' scalar mix is then one matrix-vector product over contiguous layers (model.ScalarMix). The
    widening copies every value anyway, so the new layout costs nothing."""
    if hidden.dim() == 3:
        return hidden.float()
    return hidden.permute(2, 0, 1, 3).to(torch.float32, memory_format=torch.contiguous_format).permute(1, 2, 0, 3)


def feature_shape(model):
    """What the cache keeps of each token: ([k,] H), as `MultiTaskModel.features` gives it."""
    layers, H = model.layers, model.bert.config.hidden_size
    return (layers, H) if layers > 1 else (H,)


def as_bytes(rows):
    """The memory of a contiguous CPU tensor as a writable byte buffer (what os.pwrite and os.preadv take)."""
    return rows.contiguous().view(torch.uint8).numpy()


class CachedModel(nn.Module):
    """`model` with `cache` standing in for its encoder: forward(batch) runs the heads alone, on the stored states
    of the batch's sentences (`batch.source`, `batch.split`, `batch.index`)."""

    def __init__(self, model, cache):
        super().__init__()
        self.model, self.cache = model, cache

    def forward(self, batch):
        return self.model.heads(self.cache.hidden(batch.source, batch.split, batch), batch)
