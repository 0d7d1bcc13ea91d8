"""A BERT encoder, written out in full.

It knows token ids and nothing else: no files, no tokenizer, no tasks. Its config is the dataclass
below; `weights.load_encoder` builds one from a published checkpoint directory. Submodule names follow the
published checkpoints (`embeddings.word_embeddings`, `encoder.layer.0.attention.self.query`, ...) so that
loading pretrained weights is a plain name match (see weights.py). `nn.ModuleDict` provides those names
where the reference implementation needs a whole class per level of nesting.

RoBERTa, XLM-R, DistilBERT and ELECTRA are this same encoder with other tensor names (families.py maps
them) and a few small differences, each in one place in `Embeddings`: where positions start
(`position_offset`), whether there is a token-type table, DistilBERT's optional fixed sinusoid positions,
and ELECTRA's projection up from narrower embeddings. Their blocks are BERT's.

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
    """The encoder's shape. Field names are those of a published BERT `config.json` (families.py translates
    the other families' keys), so one round-trips unchanged."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2  # 0: no token-type table at all (DistilBERT)
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    hidden_act: str = "gelu"
    model_type: str = "bert"  # the family (families.py): its tensor names, and where positions start
    pad_token_id: int = 0
    embedding_size: int | None = None  # ELECTRA: narrower embeddings, projected up to hidden_size
    sinusoidal_pos_embds: bool = False  # DistilBERT: a fixed sinusoid position table, not a learned one

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "layer_norm_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        for name in ("type_vocab_size", "pad_token_id"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, not {getattr(self, name)}")
        if self.embedding_size is not None and self.embedding_size <= 0:
            raise ValueError(f"embedding_size must be positive, not {self.embedding_size}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), not {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act != "gelu":
            # "gelu" in BERT configs means the exact erf form; the tanh approximations are other models.
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported (only 'gelu')")
        if self.max_tokens < 1:
            raise ValueError(f"max_position_embeddings {self.max_position_embeddings} leaves no position after "
                             f"the first {self.position_offset}")

    @property
    def position_offset(self):
        """The first position row a sentence uses. RoBERTa and XLM-R (fairseq) number positions from
        pad_token_id + 1, the rows below being reserved for padding; BERT's first token uses row 0."""
        return self.pad_token_id + 1 if self.model_type in ("roberta", "xlm-roberta") else 0

    @property
    def max_tokens(self):
        """The longest input, [CLS] and [SEP] included, that the position table can number."""
        return self.max_position_embeddings - self.position_offset


class Embeddings(nn.Module):
    """word + position + token type, then LayerNorm and dropout (and ELECTRA's projection)."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        E = cfg.embedding_size or cfg.hidden_size
        self.position_offset = cfg.position_offset
        self.fixed_positions = cfg.sinusoidal_pos_embds
        self.word_embeddings = nn.Embedding(cfg.vocab_size, E)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, E)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, E) if cfg.type_vocab_size else None
        self.LayerNorm = nn.LayerNorm(E, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        # ELECTRA's generator and discriminator share embeddings sized for the small generator; the
        # discriminator projects them up to its own width.
        self.project = nn.Linear(E, cfg.hidden_size) if E != cfg.hidden_size else None
        # A run with --word-shape (outside the frozen recipe) sets a wordshape.WordShapes(E) table here: one more
        # id per position, like the token type, added before the LayerNorm. Published checkpoints have none.
        self.word_shapes = None

    def forward(self, input_ids, shape_ids=None):
        T, first = input_ids.shape[1], self.position_offset
        if first + T > self.position_embeddings.num_embeddings:
            raise ValueError(f"sequence of {T} tokens is longer than the "
                             f"{self.position_embeddings.num_embeddings - first} positions this model was trained with")
        # Batches are padded on the right, so a row's real tokens are always its first ones and take
        # positions first, first + 1, ... (RoBERTa's cumulative count of non-padding tokens, plus its offset).
        positions = self.position_embeddings.weight[first : first + T]  # (T, E)
        if self.fixed_positions:
            positions = positions.detach()  # no gradient, so AdamW never moves (nor decays) the sinusoids
        x = self.word_embeddings(input_ids) + positions  # (B, T, E)
        # Both tasks read single sentences: every token is in segment 0, so that one row of the token-type
        # table is added to all of them (the table is kept only because pretrained files carry it).
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings.weight[0]
        if self.word_shapes is not None:
            if shape_ids is None:
                raise ValueError("this encoder adds word shapes to its embeddings: pass shape_ids")
            x = x + self.word_shapes(shape_ids)  # (B, T, E); all zeros until training moves it (wordshape.py)
        x = self.dropout(self.LayerNorm(x))
        return x if self.project is None else self.project(x)  # (B, T, H)


class TokenLayout:
    """Where the N real tokens of a padded (B, T) batch sit, to move hidden states between the two shapes.

    Why: every part of a layer except attention (the Linear projections, GELU, LayerNorm, dropout) treats
    each token on its own, and in a batch of sentences in file order about half of the (B, T) positions are
    padding (49% for SNIPS at batch 64). So the layers work on the packed (N, H) real tokens, and only
    attention unpacks them onto the (B, T) grid, with zeros at padding, which the key mask then hides.
    Without padding, packing is just a reshape and there is no mask, which lets scaled_dot_product_attention
    pick its fastest kernel.
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

    def forward(self, x, layout):
        x = self.attention["output"](self.attention["self"](x, layout), x)  # (N, H)
        h = F.gelu(self.intermediate["dense"](x))  # (N, I); exact erf GELU, as BERT was trained
        return self.output(h, x)                   # (N, H)


class Bert(nn.Module):
    """`encoder(input_ids, attention_mask)` -> last hidden states (B, T, H) (or several layers', see forward).

    attention_mask is optional, 1 for real tokens and 0 for padding. Padding positions come out as zeros:
    they are never computed (see TokenLayout), and every real position ignores them as keys.
    """

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = nn.ModuleDict({"layer": nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))})
        # No pooler (tanh(dense(h[CLS]))): it was trained for next-sentence prediction, and the task heads
        # pool for themselves (model.py). Its tensors in a pretrained file are ignored.

    @property
    def layers(self):
        return self.encoder["layer"]

    def forward(self, input_ids, attention_mask=None, layers=1, shape_ids=None):
        """The last hidden states (B, T, H); with `layers` = k > 1, the top k hidden states stacked as
        (B, T, k, H), bottom first, the embeddings' output counting as layer 0 (so k <= num_hidden_layers + 1).
        `shape_ids` (B, T): each position's word shape, for an encoder whose embeddings have a shape table."""
        B, T = input_ids.shape
        layout = TokenLayout(attention_mask, B, T)
        x = layout.pack(self.embeddings(input_ids, shape_ids))  # (N, H)
        states = deque([x], maxlen=layers)  # the top `layers` outputs so far
        for layer in self.layers:
            x = layer(x, layout)
            states.append(x)
        if layers == 1:
            return layout.unpack(x)  # (B, T, H)
        return layout.unpack(torch.stack(list(states), dim=1))  # (N, k, H) -> (B, T, k, H)
