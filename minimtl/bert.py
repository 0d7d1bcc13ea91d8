"""A BERT encoder, written out in full. It knows token ids and nothing else: no files, no tokenizer, no tasks.

Submodule names follow the published checkpoints (`embeddings.word_embeddings`, `encoder.layer.0.attention.
self.query`, ...), so loading pretrained weights is a plain name match (weights.py); `nn.ModuleDict` gives
those names where the reference implementation needs a class per level of nesting. Checkpoints that are BERT
under other names hand `Bert` their own embeddings module (extensions/families.py).

References:
- Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers", https://arxiv.org/abs/1810.04805
- Vaswani et al. 2017, "Attention Is All You Need", https://arxiv.org/abs/1706.03762
"""

from collections import deque
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class BertConfig:
    """The encoder's shape, in the field names of a published BERT `config.json`."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    hidden_act: str = "gelu"

    @property
    def max_tokens(self):
        """The longest input, [CLS] and [SEP] included, that the position table can number."""
        return self.max_position_embeddings

    @property
    def embedding_width(self):
        """The width of the embedding tables (other checkpoints' may be narrower than the hidden states)."""
        return self.hidden_size

    def encoder_name(self, name):
        """A published tensor name as `Bert` calls it (`bert.encoder.layer.0...` -> `encoder.layer.0...`), or None
        for one the encoder does not use (task heads, the pooler, buffers)."""
        return encoder_tensor(name.removeprefix("bert."))


def encoder_tensor(name):
    """encoder_name without the model's prefix."""
    module, _, param = name.rpartition(".")
    # The original TensorFlow port of BERT called LayerNorm's parameters gamma and beta; embeddings.*_ids are
    # the buffers of ids that transformers keeps beside its tables, not weights.
    param = {"gamma": "weight", "beta": "bias"}.get(param, param) if module.endswith("LayerNorm") else param
    if module == "embeddings" and param.endswith("_ids") or not module.startswith(("embeddings.", "encoder.")):
        return None
    return f"{module}.{param}"


class Embeddings(nn.Module):
    """word + position + token type, then LayerNorm and dropout: (B, T) ids -> (B, T, H)."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        H = cfg.hidden_size
        self.word_embeddings = nn.Embedding(cfg.vocab_size, H)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, H)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, H)
        self.LayerNorm = nn.LayerNorm(H, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids, added=None):
        """`added` (B, T, H): more vectors summed before the LayerNorm (MultiTaskModel.embedding_input)."""
        T = input_ids.shape[1]
        if T > self.position_embeddings.num_embeddings:
            raise ValueError(f"sequence of {T} tokens is longer than the "
                             f"{self.position_embeddings.num_embeddings} positions this model was trained with")
        # Batches are padded on the right, so a row's real tokens are always its first ones: positions 0..T-1.
        x = self.word_embeddings(input_ids) + self.position_embeddings.weight[:T]  # (B, T, H)
        # Both tasks read single sentences: every token is in segment 0, so that one row is added to all.
        x = x + self.token_type_embeddings.weight[0]
        if added is not None:
            x = x + added
        return self.dropout(self.LayerNorm(x))


class TokenLayout:
    """Where the N real tokens of a padded (B, T) batch sit: the one step that packs and unpacks them.

    Every part of a layer but attention treats each token on its own, and about half of a batch's (B, T)
    positions can be padding. So the layers work on the packed (N, H) real tokens, and only attention unpacks
    them onto the (B, T) grid, zeros at padding, which the key mask hides. Without padding it is a reshape.
    """

    def __init__(self, attention_mask, B, T):
        self.B, self.T = B, T
        self.index = self.key_mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            real = attention_mask.bool()                 # (B, T)
            self.index = real.nonzero(as_tuple=True)     # (rows, positions), each (N,), row-major order
            self.key_mask = real[:, None, None, :]       # (B, 1, 1, T)

    def pack(self, x):
        """(B, T, ...) -> (N, ...): the real positions only."""
        return x.flatten(0, 1) if self.index is None else x[self.index]

    def unpack(self, x):
        """(N, ...) -> (B, T, ...), zeros at padding."""
        if self.index is None:
            return x.unflatten(0, (self.B, self.T))
        grid = x.new_zeros(self.B, self.T, *x.shape[1:])
        grid[self.index] = x
        return grid


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product attention over all tokens, padding keys masked out."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        H = cfg.hidden_size
        self.n_head = cfg.num_attention_heads
        self.query = nn.Linear(H, H)
        self.key = nn.Linear(H, H)
        self.value = nn.Linear(H, H)
        self.dropout_p = cfg.attention_probs_dropout_prob

    def forward(self, x, layout):
        N, H = x.shape
        nh, hs = self.n_head, H // self.n_head
        # Only attention needs the (B, T) grid: each token must see the other tokens of its own sentence.
        q = layout.unpack(self.query(x)).unflatten(-1, (nh, hs)).transpose(1, 2)  # (B, nh, T, hs)
        k = layout.unpack(self.key(x)).unflatten(-1, (nh, hs)).transpose(1, 2)    # (B, nh, T, hs)
        v = layout.unpack(self.value(x)).unflatten(-1, (nh, hs)).transpose(1, 2)  # (B, nh, T, hs)
        # key_mask (B, 1, 1, T), True = may be attended to; it broadcasts over heads and queries.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=layout.key_mask,
                                           dropout_p=self.dropout_p if self.training else 0.0)
        return layout.pack(y.transpose(1, 2)).flatten(1)  # (N, H): heads side by side again


class ResidualNorm(nn.Module):
    """The `*.output` block: project, dropout, add the block's input back, LayerNorm. BERT is post-LN (the norm
    after the residual sum, unlike GPT-2): the pretrained weights compute this function and no other."""

    def __init__(self, d_in, d_out, eps, p_drop):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)
        self.dropout = nn.Dropout(p_drop)

    def forward(self, h, residual):
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class Layer(nn.Module):
    """One transformer block: self-attention, then a position-wise feed-forward network."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        H, I, eps, p = cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps, cfg.hidden_dropout_prob
        self.attention = nn.ModuleDict({"self": SelfAttention(cfg), "output": ResidualNorm(H, H, eps, p)})
        self.intermediate = nn.ModuleDict({"dense": nn.Linear(H, I)})
        self.output = ResidualNorm(I, H, eps, p)

    def forward(self, x, layout):
        x = self.attention["output"](self.attention["self"](x, layout), x)  # (N, H)
        h = F.gelu(self.intermediate["dense"](x))  # (N, I); exact erf GELU, as BERT was trained
        return self.output(h, x)                   # (N, H)


class Bert(nn.Module):
    """`encoder(input_ids, attention_mask)` -> last hidden states (B, T, H). The mask (1 real, 0 padding) is
    optional; padding positions come out as zeros: never computed (TokenLayout), and ignored as keys."""

    def __init__(self, cfg: BertConfig, embeddings=None):
        super().__init__()
        self.config = cfg
        self.embeddings = embeddings if embeddings is not None else Embeddings(cfg)
        self.encoder = nn.ModuleDict({"layer": nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))})
        # No pooler: it was trained for next-sentence prediction, and the heads pool for themselves (model.py).

    @property
    def layers(self):
        return self.encoder["layer"]

    def forward(self, input_ids, attention_mask=None, layers=1, added=None):
        """The last hidden states (B, T, H); with `layers` = k > 1, the top k stacked as (B, T, k, H), bottom first,
        the embeddings' output counting as one. `added`: what the embeddings add before their LayerNorm."""
        B, T = input_ids.shape
        layout = TokenLayout(attention_mask, B, T)
        x = layout.pack(self.embeddings(input_ids, added))  # (N, H)
        states = deque([x], maxlen=layers)  # the top `layers` outputs so far
        for layer in self.layers:
            x = layer(x, layout)
            states.append(x)
        if layers == 1:
            return layout.unpack(x)  # (B, T, H)
        return layout.unpack(torch.stack(list(states), dim=1))  # (N, k, H) -> (B, T, k, H)
