"""The frozen-backbone feature cache.

With every encoder parameter frozen (and, being frozen, in eval mode: no dropout), the encoder is a fixed
function: a sentence's hidden states are the same in every epoch. Computing them once and training only
the heads on the stored states turns an N-epoch run into one encoder pass plus N cheap head passes.

The cache is only valid while that holds, so `possible()` re-checks `requires_grad` on every encoder
parameter each epoch: as soon as gradual unfreezing thaws a layer (or any other change makes the encoder
trainable) the cache is dropped and the full model runs again.
"""

import time

import torch

from .batches import batches


class FeatureCache:
    def __init__(self, model, pad_id, batch_size, device):
        self.model, self.pad_id, self.batch_size, self.device = model, pad_id, batch_size, device
        self.hidden = {}  # split name -> one (T_i, H) tensor per sentence, unpadded

    def possible(self):
        return not any(p.requires_grad for p in self.model.bert.parameters())

    def enable(self, encoded, log=print):
        """Compute the hidden states of every split once; returns True (the cache is in use)."""
        if not self.hidden:
            start, n = time.perf_counter(), sum(len(split) for split in encoded.values())
            self.hidden = {name: self.encode(split) for name, split in encoded.items()}
            log(f"feature cache: backbone frozen, encoded {n} sentences once in {time.perf_counter() - start:.1f}s;"
                " the heads train on the cached hidden states")
        return True

    def disable(self):
        self.hidden = {}
        return False

    @torch.inference_mode()
    def encode(self, split):
        out = [None] * len(split)
        was_training = self.model.bert.training
        self.model.bert.eval()
        for batch in batches(split, self.batch_size * 2, self.pad_id):
            batch = batch.to(self.device)
            hidden = self.model.bert(batch.input_ids, batch.attention_mask)  # (B, T, H)
            for row, i in enumerate(batch.index):
                out[i] = hidden[row, : len(split.input_ids[i])].clone()
        self.model.bert.train(was_training)
        return out

    def outputs(self, name, batch):
        """The heads' outputs for `batch` of split `name` from cached states, or None when not cached."""
        if name not in self.hidden:
            return None
        hidden = torch.nn.utils.rnn.pad_sequence([self.hidden[name][i] for i in batch.index], batch_first=True)
        return self.model.heads(hidden, batch.attention_mask)
