"""One shared BERT backbone, two task heads, and the masked multi-task loss.

    tokens -> Bert -> hidden (B, T, H) -+-> pool -> ClassificationHead -> cls_logits (B, C)
                                               +-> per token -> NER head      -> ner_logits (B, T, K)

Both heads read the same hidden states, so one forward pass serves both tasks; the backbone learns from
the weighted sum of both losses. The backbone is stored as `bert`, which makes our state-dict names the
published `bert.embeddings...` ones: a trained checkpoint loads with `load_encoder` like any BERT.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .freezing import unit_modules

IGNORE_INDEX = -100  # label id that cross-entropy skips: special tokens, padding, continuation sub-tokens
POOLINGS = ("cls", "mean")


@dataclass
class HeadConfig:
    """What the heads are; saved in a checkpoint's config.json as is (`asdict`) and read back with `HeadConfig(**d)`."""

    n_labels: int  # sentence classes; 0 = the data has no sentence task, no head is built
    n_tags: int  # BIO tags; 0 = the data has no token task
    pooling: str = "cls"
    dropout: float = 0.1


class ClassificationHead(nn.Module):
    """Pool the tokens into one vector, then dropout -> linear."""

    def __init__(self, hidden_size, cfg: HeadConfig):
        super().__init__()
        self.pooling = cfg.pooling
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(hidden_size, cfg.n_labels)

    def forward(self, hidden, attention_mask):
        if self.pooling == "cls":
            # [CLS] sees every token through attention; fine-tuning teaches it to summarise the sentence.
            x = hidden[:, 0]  # (B, H)
        else:
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1): padding must not dilute the mean
            x = (hidden * m).sum(1) / m.sum(1).clamp(min=1)  # (B, H)
        return self.out(self.dropout(x))  # (B, C)


class TokenHead(nn.Module):
    """dropout -> linear, applied to every position; the loss later keeps only labelled ones."""

    def __init__(self, hidden_size, cfg: HeadConfig):
        super().__init__()
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(hidden_size, cfg.n_tags)

    def forward(self, hidden):
        return self.out(self.dropout(hidden))  # (B, T, K)


@dataclass
class Outputs:
    cls_logits: torch.Tensor | None  # (B, C), None without a sentence task
    ner_logits: torch.Tensor | None  # (B, T, K), None without a token task


class MultiTaskModel(nn.Module):
    def __init__(self, encoder, config: HeadConfig):
        super().__init__()
        self.bert = encoder
        self.config = config
        H = encoder.config.hidden_size
        self.cls_head = ClassificationHead(H, config) if config.n_labels else None
        self.ner_head = TokenHead(H, config) if config.n_tags else None

    def forward(self, input_ids, attention_mask):
        return self.run_heads(self.bert(input_ids, attention_mask), attention_mask)

    def run_heads(self, hidden, attention_mask):
        """Both task outputs from the backbone's hidden states (B, T, H)."""
        return Outputs(
            self.cls_head(hidden, attention_mask) if self.cls_head is not None else None,
            self.ner_head(hidden) if self.ner_head is not None else None,
        )

    def train(self, mode=True):
        # A frozen unit runs in eval mode: dropout in weights that cannot learn is pure noise.
        # "Frozen" is read off requires_grad, so this stays right as freezing.py thaws layers.
        super().train(mode)
        if mode:
            for module in unit_modules(self).values():
                if not any(p.requires_grad for p in module.parameters()):
                    module.eval()
        return self


def multitask_loss(out: Outputs, labels, tags, w_cls=1.0, w_ner=1.0):
    """w_cls * CE(sentence) + w_ner * masked CE(tokens), over whichever labels the batch carries.

    `labels` (B,) and `tags` (B, T) use IGNORE_INDEX for "no label here": padding, [CLS]/[SEP], the
    continuation sub-tokens of a word, a class unseen in training, or a sentence from a dataset that only
    has the other task. A task with no label in the batch contributes nothing, instead of a 0/0 NaN.
    Returns (total, {task: loss}).
    """
    parts = {}
    if out.cls_logits is not None and labels is not None and (labels != IGNORE_INDEX).any():
        parts["cls"] = F.cross_entropy(out.cls_logits, labels, ignore_index=IGNORE_INDEX)
    if out.ner_logits is not None and tags is not None and (tags != IGNORE_INDEX).any():
        parts["ner"] = F.cross_entropy(out.ner_logits.flatten(0, 1), tags.flatten(), ignore_index=IGNORE_INDEX)
    weights = {"cls": w_cls, "ner": w_ner}
    total = sum(weights[task] * loss for task, loss in parts.items())
    return total, parts
