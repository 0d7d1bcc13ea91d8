"""The frozen-backbone feature cache.

With every encoder parameter frozen (and, being frozen, in eval mode: no dropout), the encoder is a fixed
function: a sentence's hidden states are the same in every epoch. Computing them once and training only
the heads on the stored states turns an N-epoch run into one encoder pass plus N cheap head passes.

What is stored is exactly what the heads read (`MultiTaskModel.features`): the last hidden state, or the
top k layers for a scalar mix. Only real tokens are kept, all sentences of a split in one flat tensor, so a
batch is one gather, with no per-sentence Python. Half precision halves the memory (k layers of a whole
corpus add up) and costs nothing the heads can see: float16 keeps 11 significant bits, and the heads
train in float32 on the widened values.

The cache holds tensors only, never the model: the training loop builds it when the whole encoder is
frozen for an epoch (training.features_for_epoch) and drops it as soon as gradual unfreezing thaws a layer.
"""

import time

import torch

from .batching import batches

ENCODE_BATCH = 64


class FeatureCache:
    """(source name, split name) -> the features of every real token of the split, and where each sentence
    starts: flat (N_tokens + 1, [k,] H), its last row zeros (what padding reads, as the encoder gives it)."""

    def __init__(self, model, sources, splits, log, dtype=torch.float16):
        start = time.perf_counter()
        self.states = {(s.name, split): self.encode(model, s.ids[split], dtype) for s in sources for split in splits}
        n = sum(len(starts) for _, starts in self.states.values())
        size = sum(flat.numel() * flat.element_size() for flat, _ in self.states.values())
        layers = model.config.layers
        log(f"feature cache: backbone frozen, encoded {n} sentences once in {time.perf_counter() - start:.1f}s "
            f"({'the last layer' if layers == 1 else f'the top {layers} layers'}, {size / 2**20:,.0f} MiB in "
            f"{str(dtype).removeprefix('torch.')}); the heads train on the cached features")

    @staticmethod
    def size(model, sources, splits, dtype=torch.float16):
        """The bytes a cache of these splits takes, known before it is built: every real token's features
        (and one zero row per split), plus where each sentence starts."""
        layers, H = model.config.layers, model.bert.config.hidden_size
        per_token = layers * H * torch.empty((), dtype=dtype).element_size()
        return sum((sum(map(len, s.ids[split].input_ids)) + 1) * per_token + 8 * len(s.ids[split])
                   for s in sources for split in splits)

    @staticmethod
    @torch.inference_mode()
    def encode(model, split, dtype):
        lengths = torch.tensor([len(ids) for ids in split.input_ids])
        starts = torch.cumsum(lengths, 0) - lengths  # (S,): first row of each sentence
        flat = None
        was_training = model.bert.training
        model.bert.eval()
        device = next(model.parameters()).device
        for batch in batches(split, ENCODE_BATCH):
            batch = batch.to(device)
            hidden = model.features(batch.input_ids, batch.attention_mask, batch.shape_ids)  # (B, T, [k,] H)
            if flat is None:
                flat = hidden.new_zeros((int(lengths.sum()) + 1, *hidden.shape[2:]), dtype=dtype)
            for row, i in enumerate(batch.index):
                flat[starts[i] : starts[i] + lengths[i]] = hidden[row, : lengths[i]]
        model.bert.train(was_training)
        return flat, starts.to(device)

    def hidden(self, source, split, batch):
        """The cached features of `batch`, padded to (B, T, [k,] H) like the encoder's own output."""
        flat, starts = self.states[source, split]
        T = batch.input_ids.shape[1]
        positions = torch.arange(T, device=starts.device)
        rows = starts[batch.index][:, None] + positions  # (B, T)
        real = batch.attention_mask.to(starts.device).bool()
        return flat[torch.where(real, rows, len(flat) - 1)].float()  # padding reads the zero row
