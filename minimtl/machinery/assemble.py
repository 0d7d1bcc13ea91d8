"""The model a recipe asks for: the core's backbone and heads, with the extensions handed in where they attach.

    encoder ─┬─ embedding_input: word shapes added to the input embeddings (fine-tuning)   extensions/wordshape.py
             ├─ head_input: word shapes added to what the heads read (a frozen backbone)
             ├─ cls_head(mix, neck)   the scalar mix of layers, a BiLSTM or convolutions   extensions/heads.py
             └─ ner_head(mix, neck)   the same, as a CRFTokenHead with a CRF              extensions/crf.py
    and as an InContext model, each sentence read in its document's window                 extensions/context.py

`HeadConfig` says which, and is saved in a checkpoint's config.json as is (`asdict`), so that reading the
checkpoint builds the same model again (checkpoint.py).
"""

from dataclasses import dataclass

from ..model import POOLINGS, ClassificationHead, MultiTaskModel, TokenHead
from ..extensions.wordshape import WordShapes
from ..extensions.context import InContext
from ..extensions.crf import CRFTokenHead
from ..extensions.heads import HEAD_KINDS, mix, neck

WORD_SHAPES = ("embeddings", "heads")  # where a run with --word-shape adds its shape vectors (wordshape.py)


@dataclass
class HeadConfig:
    """What the heads are; saved in a checkpoint's config.json as is (`asdict`) and read back with `HeadConfig(**d)`."""

    n_labels: int  # sentence classes; 0 = the data has no sentence task, no head is built
    n_tags: int  # BIO tags; 0 = the data has no token task
    pooling: str = "cls"  # how the linear sentence head reads the tokens: [CLS] or their mean (one of POOLINGS)
    dropout: float = 0.1
    layers: int = 1  # top hidden states the heads read (the embeddings' output counts as one); > 1: a scalar mix
    sentence_head: str = "linear"  # or "conv" / "lstm" (HEAD_KINDS): then their states' mean and max
    token_head: str = "linear"  # or "conv" / "lstm": between the (mixed) states and the tag layer
    crf: bool = False  # a CRF over words on top of the tag layer


def build_model(encoder, heads: HeadConfig, tags=None, word_shapes=None, context=False):
    """A MultiTaskModel on `encoder` with the heads `heads` describes. `tags`: the BIO tag names (needed when
    heads.n_tags > 0). `word_shapes`: None, or where a zero-initialised word-shape table is added (WORD_SHAPES).
    `context`: an InContext model, whose batches carry each sentence's window (context.py).
    The HeadConfig is kept as `model.config`, which a checkpoint records."""
    if heads.n_tags and (tags is None or len(tags) != heads.n_tags):
        raise ValueError(f"{heads.n_tags} tags need their {heads.n_tags} names")
    if word_shapes not in (None, *WORD_SHAPES):
        raise ValueError(f"word_shapes must be None or one of {WORD_SHAPES}, not {word_shapes!r}")
    assert heads.pooling in POOLINGS and {heads.sentence_head, heads.token_head} <= set(HEAD_KINDS)
    H = encoder.config.hidden_size
    shapes = {where: None for where in WORD_SHAPES}
    if word_shapes:  # built first, and from zeros: every other weight is drawn as in a run without them
        shapes[word_shapes] = WordShapes(encoder.embeddings.word_embeddings.embedding_dim if word_shapes == "embeddings"
                                         else H)
    cls_head = ClassificationHead(H, heads.n_labels, heads.pooling, heads.dropout, mix(heads.layers),
                                  neck(heads.sentence_head, H)) if heads.n_labels else None
    tag_head = CRFTokenHead if heads.crf else TokenHead
    ner_head = tag_head(H, tags, heads.dropout, mix(heads.layers), neck(heads.token_head, H)) if heads.n_tags else None
    model = (InContext if context else MultiTaskModel)(encoder, cls_head, ner_head, heads.layers, shapes["embeddings"],
                                                       shapes["heads"])
    model.config = heads
    return model


def word_shapes_of(model):
    """Where `model` adds word shapes: "embeddings", "heads" or None (build_model's `word_shapes`)."""
    return "embeddings" if model.embedding_input is not None else "heads" if model.head_input is not None else None
