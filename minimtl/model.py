"""One shared BERT backbone, two task heads, and the masked multi-task loss.

    batch -> Bert -> hidden (B, T, H) -+-> pool ([CLS] or mean) -> dropout -> linear -> cls_logits (B, C)
                                       +-> dropout -> linear at every position      -> ner_logits (B, T, K)
    loss = w_cls * CE(cls_logits, label) + w_ner * CE(ner_logits, tag), over the positions that carry a tag

One forward pass serves both tasks, and the backbone learns from the weighted sum of both losses. Tags sit
on each word's first sub-token and every other position holds IGNORE_INDEX (tokenization.py), so the token
loss counts each word once. The backbone is stored as `bert`, so our state-dict names are the published
`bert.embeddings...` ones: a trained checkpoint loads with `load_encoder` like any BERT.

What a caller may hand in (all optional; extensions/ holds them):
- a head's `mix`: the encoder's top k layers (B, T, k, H) -> (B, T, H), when the model reads k > 1 layers;
- a head's `neck` (the vision word for what sits between a backbone and a head): a sequence layer
  (B, T, H) -> (B, T, neck.width); the sentence head then pools its states' mean and max;
- `MultiTaskModel.embedding_input` / `head_input`: a module reading the batch whose (B, T, .) vectors are
  added to the input embeddings / to what the heads read;
- a subclass of TokenHead with its own `loss` and `decode`.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .bio import best_valid_paths, transition_mask
from .freezing import unit_modules

IGNORE_INDEX = -100  # label id that cross-entropy skips: special tokens, padding, continuation sub-tokens
POOLINGS = ("cls", "mean")


def mean_pool(x, attention_mask):  # (B, T, H) -> (B, H)
    m = attention_mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1): padding must not dilute the mean
    return (x * m).sum(1) / m.sum(1).clamp(min=1)


class ClassificationHead(nn.Module):
    """Pool the tokens into one vector -> dropout -> linear: (B, T, H) -> (B, C)."""

    def __init__(self, hidden_size, n_labels, pooling="cls", dropout=0.1, mix=None, neck=None):
        super().__init__()
        self.pooling = pooling
        self.mix = mix or nn.Identity()
        self.neck = neck
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size if neck is None else 2 * neck.width, n_labels)

    def forward(self, hidden, attention_mask):
        hidden = self.mix(hidden)  # (B, T, H)
        if self.neck is not None:
            # The mean says what the whole sentence is about; the max keeps the one word that decides it
            # ("play", "book", "rate") from being averaged away among the slot words.
            states = self.neck(hidden, attention_mask)  # (B, T, C)
            top = states.masked_fill(~attention_mask.bool().unsqueeze(-1), float("-inf")).amax(1)  # (B, C)
            x = torch.cat([mean_pool(states, attention_mask), top], -1)  # (B, 2C)
        elif self.pooling == "cls":
            # [CLS] sees every token through attention; fine-tuning teaches it to summarise the sentence.
            x = hidden[:, 0]  # (B, H)
        else:
            # Sentence encoders such as all-MiniLM-L6-v2 were trained to be read this way (weights.py).
            x = mean_pool(hidden, attention_mask)  # (B, H)
        return self.out(self.dropout(x))  # (B, C)


class TokenHead(nn.Module):
    """Dropout -> linear at every position: (B, T, H) -> (B, T, K), one logit per BIO tag.

    The logits at each word's first sub-token are that word's scores; the loss and decoding read only those
    (see `loss` and `decode`), so [CLS], [SEP], padding and continuation sub-tokens never count.
    """

    def __init__(self, hidden_size, tags, dropout=0.1, mix=None, neck=None):
        super().__init__()
        self.mix = mix or nn.Identity()
        self.neck = neck
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size if neck is None else neck.width, len(tags))
        self.tags = list(tags)  # BIO names: decoding never predicts a transition the scheme forbids
        # Which tags may open a sentence and follow which, fixed by the names: built once, never saved.
        start_ok, follow_ok = transition_mask(self.tags)
        self.register_buffer("start_ok", torch.tensor(start_ok), persistent=False)  # (K,)
        self.register_buffer("follow_ok", torch.tensor(follow_ok), persistent=False)  # (K, K)

    def forward(self, hidden, attention_mask):
        x = self.mix(hidden)  # (B, T, H)
        if self.neck is not None:
            x = self.neck(x, attention_mask)  # (B, T, C)
        return self.out(self.dropout(x))  # (B, T, K)

    def loss(self, logits, tags, words):
        """Cross-entropy at every labelled position: logits (B, T, K), tags (B, T) with IGNORE_INDEX. (`words`,
        each word's first sub-token (B, W), is for a head that scores whole sentences.)"""
        return F.cross_entropy(logits.flatten(0, 1), tags.flatten(), ignore_index=IGNORE_INDEX)

    def decode(self, emissions, lengths):
        """The best valid BIO path per sentence: emissions (B, W, K) at each word's first sub-token, lengths (B,)
        the word counts. A per-word arg-max can emit `O I-LOC`, which seqeval reads as a new (usually wrong)
        entity; the most probable path that BIO allows does not."""
        return best_valid_paths(emissions.float().log_softmax(-1), lengths, self.start_ok, self.follow_ok)


def at_words(logits, words):
    """Each word's tag logits, read at its first sub-token: logits (B, T, K), words (B, W) with -1 past a
    sentence's last word -> emissions (B, W, K) (padding words read position 0) and the word mask (B, W)."""
    at = words.clamp(min=0)
    return logits.gather(1, at[..., None].expand(-1, -1, logits.shape[-1])), words >= 0


@dataclass
class Outputs:
    cls_logits: torch.Tensor | None  # (B, C), None without a sentence task
    ner_logits: torch.Tensor | None  # (B, T, K), None without a token task


class MultiTaskModel(nn.Module):
    def __init__(self, encoder, cls_head=None, ner_head=None, layers=1, embedding_input=None, head_input=None):
        """`layers`: how many of the encoder's top hidden states the heads read (> 1: each head has a `mix`)."""
        super().__init__()
        if not 1 <= layers <= encoder.config.num_hidden_layers + 1:
            raise ValueError(f"the heads cannot read {layers} layers of a "
                             f"{encoder.config.num_hidden_layers}-layer encoder")
        self.bert = encoder
        self.layers = layers
        self.embedding_input = embedding_input
        self.head_input = head_input
        self.cls_head = cls_head
        self.ner_head = ner_head

    def features(self, batch):
        """What the heads read: the encoder's top `layers` hidden states, (B, T, H) or (B, T, k, H)."""
        added = self.embedding_input(batch) if self.embedding_input is not None else None
        return self.bert(batch.input_ids, batch.attention_mask, layers=self.layers, added=added)

    def heads(self, hidden, batch):
        """Both task outputs from the hidden states `features` gives."""
        if self.head_input is not None:
            # Added to every layer a mix reads: a mix is a weighted mean, so that adds gamma * the vector.
            more = self.head_input(batch)  # (B, T, H)
            hidden = hidden + (more if hidden.dim() == 3 else more[:, :, None])
        mask = batch.attention_mask
        return Outputs(self.cls_head(hidden, mask) if self.cls_head is not None else None,
                       self.ner_head(hidden, mask) if self.ner_head is not None else None)

    def forward(self, batch):
        return self.heads(self.features(batch), batch)

    def train(self, mode=True):
        # A frozen unit runs in eval mode: dropout in weights that cannot learn is pure noise.
        # "Frozen" is read off requires_grad, so this stays right as freezing.py thaws layers.
        super().train(mode)
        if mode:
            for module in unit_modules(self).values():
                if not any(p.requires_grad for p in module.parameters()):
                    module.eval()
        return self


def multitask_loss(model, out: Outputs, batch, w_cls=1.0, w_ner=1.0):
    """w_cls * CE(sentence) + w_ner * token loss, over the labels the batch has: (total, {task: loss}).

    `batch.labels` (B,) and `batch.tags` (B, T) use IGNORE_INDEX for "no label here": padding, [CLS]/[SEP],
    continuation sub-tokens, a class unseen in training, a sentence of a dataset that only has the other task.
    A task with no label in the batch adds nothing (not a 0/0 NaN); with no label at all the loss is 0.
    """
    parts = {}
    labels, tags = batch.labels, batch.tags
    if out.cls_logits is not None and labels is not None and (labels != IGNORE_INDEX).any():
        parts["cls"] = F.cross_entropy(out.cls_logits, labels, ignore_index=IGNORE_INDEX)
    if out.ner_logits is not None and tags is not None and (tags != IGNORE_INDEX).any():
        parts["ner"] = model.ner_head.loss(out.ner_logits, tags, batch.words)
    weights = {"cls": w_cls, "ner": w_ner}
    total = sum((weights[task] * loss for task, loss in parts.items()), torch.zeros(()))
    return total, parts
