"""A BERT encoder, written out in full.

It knows token ids and nothing else: no files, no tokenizer, no tasks. Submodule names follow the
published checkpoints (`embeddings.word_embeddings`, `encoder.layer.0.attention.self.query`, ...) so that
loading pretrained weights is a plain name match (see weights.py). `nn.ModuleDict` provides those names
where the reference implementation needs a whole class per level of nesting.

References:
- Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers", https://arxiv.org/abs/1810.04805
- Vaswani et al. 2017, "Attention Is All You Need", https://arxiv.org/abs/1706.03762
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import BertConfig


class Embeddings(nn.Module):
    """word + position + token type, then LayerNorm and dropout."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None):
        T = input_ids.shape[1]
        if T > self.position_embeddings.num_embeddings:
            raise ValueError(f"sequence of {T} tokens is longer than the {self.position_embeddings.num_embeddings} "
                             "positions this model was trained with")
        x = self.word_embeddings(input_ids) + self.position_embeddings.weight[:T]  # (B, T, H)
        if token_type_ids is None:
            # Single-sentence input: every token is segment 0, so one row broadcasts instead of a lookup.
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


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

    def forward(self, x, key_mask=None):
        B, T, H = x.shape
        nh, hs = self.n_head, H // self.n_head
        q = self.query(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(x).view(B, T, nh, hs).transpose(1, 2)    # (B, nh, T, hs)
        v = self.value(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        # key_mask (B, 1, 1, T), True = may be attended to; it broadcasts over heads and queries.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask,
                                           dropout_p=self.dropout_p if self.training else 0.0)
        return y.transpose(1, 2).reshape(B, T, H)  # (B, T, H): heads side by side again


class ResidualNorm(nn.Module):
    """The `*.output` block: project, dropout, add the block's input back, LayerNorm.

    BERT is a post-LN transformer: the LayerNorm comes *after* the residual sum (unlike GPT-2's pre-LN),
    so each sub-layer's output is normalised. The pretrained weights were learned this way; moving the
    norm would change the function they compute.
    """

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

    def forward(self, x, key_mask=None):
        x = self.attention["output"](self.attention["self"](x, key_mask), x)  # (B, T, H)
        h = F.gelu(self.intermediate["dense"](x))  # (B, T, I); exact erf GELU, as BERT was trained
        return self.output(h, x)                   # (B, T, H)


class BertEncoder(nn.Module):
    """`encoder(input_ids, attention_mask)` -> last hidden states (B, T, H).

    attention_mask is optional, 1 for real tokens and 0 for padding. Padding positions still get
    (meaningless) hidden states; callers ignore them, as every real position ignores them as keys.
    """

    def __init__(self, cfg: BertConfig, pooler=False):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = nn.ModuleDict({"layer": nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))})
        # The pooler (tanh(dense(h[CLS]))) was trained for next-sentence prediction; task heads here pool for
        # themselves, so it is only built when asked for.
        self.pooler = nn.ModuleDict({"dense": nn.Linear(cfg.hidden_size, cfg.hidden_size)}) if pooler else None

    @property
    def layers(self):
        return self.encoder["layer"]

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        key_mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            # Boolean mask, True = real token. With no padding at all, passing no mask lets
            # scaled_dot_product_attention pick its fastest kernel.
            key_mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        x = self.embeddings(input_ids, token_type_ids)
        for layer in self.layers:
            x = layer(x, key_mask)
        return x

    def pool(self, hidden):
        """The pretrained pooler output (B, H) for the [CLS] position; needs `pooler=True`."""
        if self.pooler is None:
            raise RuntimeError("this encoder was built without a pooler")
        return torch.tanh(self.pooler["dense"](hidden[:, 0]))
