"""The frozen-backbone feature cache.

With every encoder parameter frozen (and, being frozen, in eval mode: no dropout), the encoder is a fixed
function: a sentence's hidden states are the same in every epoch. Computing them once and training only
the heads on the stored states turns an N-epoch run into one encoder pass plus N cheap head passes.

The cache holds tensors only, never the model: the training loop builds it when the backbone is frozen
for an epoch (`backbone_frozen`) and drops it as soon as gradual unfreezing thaws a layer.
"""

import time

import torch
from torch.nn.utils.rnn import pad_sequence

from .batches import batches

ENCODE_BATCH = 64


def backbone_frozen(model):
    return not any(p.requires_grad for p in model.bert.parameters())


class FeatureCache:
    """(source name, split name) -> one unpadded (T_i, H) tensor of last hidden states per sentence."""

    def __init__(self, encoder, sources, splits, log):
        start = time.perf_counter()
        self.states = {(s.name, split): self.encode(encoder, s.ids[split]) for s in sources for split in splits}
        n = sum(len(v) for v in self.states.values())
        log(f"feature cache: backbone frozen, encoded {n} sentences once in {time.perf_counter() - start:.1f}s; "
            "the heads train on the cached hidden states")

    @staticmethod
    @torch.inference_mode()
    def encode(encoder, split):
        out = [None] * len(split)
        was_training = encoder.training
        encoder.eval()
        device = next(encoder.parameters()).device
        for batch in batches(split, ENCODE_BATCH):
            batch = batch.to(device)
            hidden = encoder(batch.input_ids, batch.attention_mask)  # (B, T, H)
            for row, i in enumerate(batch.index):
                out[i] = hidden[row, : len(split.input_ids[i])].clone()
        encoder.train(was_training)
        return out

    def hidden(self, source, split, batch):
        """The cached states of `batch`, padded to (B, T, H) like the encoder's own output."""
        return pad_sequence([self.states[source, split][i] for i in batch.index], batch_first=True)
