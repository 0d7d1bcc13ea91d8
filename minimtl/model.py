"""One shared BERT backbone, two task heads, and the masked multi-task loss.

    tokens -> Bert -> hidden (B, T, H) or top-k layers (B, T, k, H)
                 +-> [scalar mix] -> [convs or BiLSTM] -> pool -> dropout -> linear -> cls_logits (B, C)
                 +-> [scalar mix] -> [convs or BiLSTM] -> dropout -> linear        -> ner_logits (B, T, K)
                                                          -> [CRF over words: loss and decoding]

Both heads read the same hidden states, so one forward pass serves both tasks; the backbone learns from
the weighted sum of both losses. The backbone is stored as `bert`, which makes our state-dict names the
published `bert.embeddings...` ones: a trained checkpoint loads with `load_encoder` like any BERT.

The bracketed parts are what makes a *frozen* backbone nearly as good as fine-tuning it:
- which layers: a fine-tuned encoder moves its last layer towards the task; a frozen one does not, and the
  last layer of a pretrained encoder is shaped by its pretraining objective. Lower layers hold more
  syntax and surface form (useful for tagging), so each head learns its own softmax-weighted "scalar
  mix" of the top k layers (Peters et al. 2018, ELMo). Devlin et al. 2019 (Table 7) fed frozen BERT
  layers to a BiLSTM and came within 0.3 F1 of fine-tuning on CoNLL-2003.
- context: a linear layer on a frozen state decides each token alone, and a mean of frozen states weighs
  every word alike; a small contextual layer per head lets the tag head learn which neighbours matter and the
  sentence head which words decide the intent, which fine-tuning would otherwise teach the encoder itself.
  Two kinds: a BiLSTM (the frozen recipe's default) and iterated dilated convolutions (DilatedConvs). Both
  read the whole sentence; the convolutions compute every position at once, while an LSTM takes T small
  steps one after the other. On a CPU thread that parallelism buys nothing: the products cost what they cost,
  and the BiLSTM, run by PyTorch's fused kernel (BiLSTM), costs no more than the convolutions and scores
  higher (docs/recipes.md).
- a CRF (crf.py) scores whole tag sequences instead of one word at a time.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .bio import chunks, split_tag
from .crf import CRF, chunk_columns, constrained_decode_batch, per_sentence
from .freezing import unit_modules
from .wordshape import WordShapes

IGNORE_INDEX = -100  # label id that cross-entropy skips: special tokens, padding, continuation sub-tokens
POOLINGS = ("cls", "mean")
WORD_SHAPES = ("embeddings", "heads")  # where a run with --word-shape adds its shape vectors (wordshape.py)
HEAD_KINDS = ("linear", "conv", "lstm")  # what a head puts between the (mixed) states and its output layer
LSTM_HIDDEN = 128  # per direction: less than half the cost of 256 per token, and cached epochs must stay cheap
CONV_WIDTH = 128  # channels of the dilated convolutions: their products are most of a cached step's time
DILATIONS = (1, 2, 4)  # one block: each layer sees 3 positions `d` apart, so the block sees 1 + 2 * (1+2+4) = 15
CONV_ITERATIONS = 2  # the block applied twice with the same weights: 29 positions, at no extra parameter


@dataclass
class HeadConfig:
    """What the heads are; saved in a checkpoint's config.json as is (`asdict`) and read back with `HeadConfig(**d)`."""

    n_labels: int  # sentence classes; 0 = the data has no sentence task, no head is built
    n_tags: int  # BIO tags; 0 = the data has no token task
    pooling: str = "cls"  # how the linear sentence head reads the tokens: [CLS] or their mean
    dropout: float = 0.1
    layers: int = 1  # top hidden states the heads read (the embeddings' output counts as one); > 1: a scalar mix
    sentence_head: str = "linear"  # or "conv" / "lstm": dilated convolutions or a BiLSTM, then their states' mean and max
    token_head: str = "linear"  # or "conv" / "lstm": between the (mixed) states and the tag layer
    crf: bool = False  # a CRF over words on top of the tag layer


class ScalarMix(nn.Module):
    """ELMo's learned layer average: gamma * sum_j softmax(w)_j * h_j over k stacked hidden states.

    The weights start equal, so training begins from the plain mean of the layers; the softmax keeps the
    mix a weighted average, and gamma rescales it for the head that reads it (each head has its own mix).
    """

    def __init__(self, k):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(k))
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, states):  # (B, T, k, H) -> (B, T, H)
        B, T, k, H = states.shape
        w = self.weights.softmax(0).to(states.dtype)
        # The mix is one matrix-vector product, (k,) @ (k, B*T*H), which reads each state once going forward and
        # once more for the weights' gradient. Heads on cached features run it in every step; the cache gives the
        # states with each layer stored apart (features.py), so the reshape below is a view and costs nothing.
        layers = states.permute(2, 0, 1, 3).reshape(k, B * T * H)  # (k, B*T*H)
        return self.gamma * (w @ layers).view(B, T, H)


def read_layers(config):
    """What turns the encoder's output into one (B, T, H) tensor for a head: a scalar mix, or nothing."""
    return ScalarMix(config.layers) if config.layers > 1 else nn.Identity()


class BiLSTM(nn.Module):
    """A bidirectional LSTM over a padded batch: (B, T, H) -> (B, T, 2 * LSTM_HIDDEN), padding positions zero.

    Two one-way LSTMs. `left_to_right` reads the batch as it is: its padding comes after every real token,
    so no real token's state depends on it. `right_to_left` reads each sentence reversed within its own
    length ([SEP] first), so its padding is at the end too, and its states are put back in order afterwards.
    Each direction is then one call on a plain padded tensor, which PyTorch runs with its fused LSTM kernel
    (oneDNN on a CPU, cuDNN on CUDA). nn.LSTM(bidirectional=True) runs its backward direction from the end of
    the padding: it needs a PackedSequence to start at [SEP], and a packed batch takes the unfused path, one
    small product after another at every step, which made cached heads epochs slower.
    """

    def __init__(self, input_size):
        super().__init__()
        self.left_to_right = nn.LSTM(input_size, LSTM_HIDDEN, batch_first=True)
        self.right_to_left = nn.LSTM(input_size, LSTM_HIDDEN, batch_first=True)

    def forward(self, x, attention_mask):
        lengths = attention_mask.sum(1)  # (B,)
        ahead = self.left_to_right(x)[0]  # (B, T, L)
        behind = reversed_within(self.right_to_left(reversed_within(x, lengths))[0], lengths)  # (B, T, L)
        return torch.cat([ahead, behind], -1) * attention_mask.unsqueeze(-1).to(x.dtype)  # (B, T, 2L)


def reversed_within(x, lengths):
    """Each sentence's first `lengths[b]` positions in reverse order, its padding where it was: (B, T, C) ->
    (B, T, C). Its own inverse."""
    t = torch.arange(x.shape[1], device=x.device)
    index = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, T)
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class DilatedConv(nn.Module):
    """One convolution of width 3 and dilation d over (B, T, C): position t reads t - d, t and t + d.

    Written as one matrix product and two shifted sums: one Linear gives every position its three
    contributions (C -> 3C: to the position d further on, to itself, to the position d further back), which
    are then added where they belong. This is what nn.Conv1d computes, without its channels-first layout,
    whose transposes and reorders cost more than the products themselves at these sizes. The taps have no
    bias of their own, so a zeroed position contributes exactly zero, as a convolution's zero padding does.
    """

    def __init__(self, width, dilation):
        super().__init__()
        self.dilation = dilation
        self.taps = nn.Linear(width, 3 * width, bias=False)
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, h):  # (B, T, C) -> (B, T, C)
        d = self.dilation
        forward, out, backward = self.taps(h).chunk(3, dim=-1)  # each (B, T, C)
        out = out + self.bias
        out[:, d:] += forward[:, :-d]  # position t gets what t - d sends forward
        out[:, :-d] += backward[:, d:]  # and what t + d sends back
        return out


class DilatedConvs(nn.Module):
    """Iterated dilated convolutions (Strubell et al. 2017, "Fast and Accurate Entity Recognition with
    Iterated Dilated Convolutions"): (B, T, H) -> (B, T, CONV_WIDTH), padding positions zero.

    Stacking dilations 1, 2, 4 makes the receptive field grow exponentially with depth (15 sub-tokens), and
    applying the same block again doubles it (29) without adding a parameter: most sentences are seen whole.
    Unlike an LSTM, nothing waits for the previous position, so each layer is one large matrix product over
    every position of the batch.

    Padding must not leak into a sentence: its positions are set to zero before every layer, which is exactly
    the zero padding a convolution uses past the ends of an unpadded sentence. So a sentence gets the same
    states alone as in any batch (test_heads.py checks it). Residual connections keep the block close to
    the projected input, which keeps the iterated block trainable. Unlike an LSTM's tanh, nothing bounds
    what six residual layers add up to, and a pretrained encoder's states have a few very large features:
    a LayerNorm at the end gives the output layer states of one scale, as the BiLSTM's are (without it, the
    first steps' losses were ten times the BiLSTM's and the tagger learned nothing on small data).
    """

    def __init__(self, input_size):
        super().__init__()
        self.project = nn.Linear(input_size, CONV_WIDTH)
        self.layers = nn.ModuleList(DilatedConv(CONV_WIDTH, d) for d in DILATIONS)
        self.norm = nn.LayerNorm(CONV_WIDTH)

    def forward(self, x, attention_mask):
        real = attention_mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        h = F.relu(self.project(x)) * real  # (B, T, C)
        for _ in range(CONV_ITERATIONS):
            for conv in self.layers:
                h = (h + F.relu(conv(h))) * real
        return self.norm(h) * real


def add_contextual_layer(head, kind, input_size):
    """Give `head` the layer between its (mixed) states and its output: `head.convs` (DilatedConvs) or
    `head.lstm` (a BiLSTM; the name older checkpoints store it under), each None when not chosen.
    Returns the width of what the layer gives the output."""
    head.convs = DilatedConvs(input_size) if kind == "conv" else None
    head.lstm = BiLSTM(input_size) if kind == "lstm" else None
    return {"conv": CONV_WIDTH, "lstm": 2 * LSTM_HIDDEN}.get(kind, input_size)


def contextualise(head, x, attention_mask):
    """(B, T, H) -> the head's contextual states (B, T, C), padding positions zero; x itself without a layer."""
    if head.convs is not None:
        return head.convs(x, attention_mask)
    if head.lstm is not None:
        return head.lstm(x, attention_mask)
    return x


def mean_pool(x, attention_mask):  # (B, T, H) -> (B, H)
    m = attention_mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1): padding must not dilute the mean
    return (x * m).sum(1) / m.sum(1).clamp(min=1)


class ClassificationHead(nn.Module):
    """(mix the layers) -> pool the tokens into one vector -> dropout -> linear; or, with a contextual layer:
    (mix) -> convolutions or BiLSTM -> the mean and the max of its states -> dropout -> linear."""

    def __init__(self, hidden_size, cfg: HeadConfig):
        super().__init__()
        self.pooling = cfg.pooling
        self.mix = read_layers(cfg)
        width = add_contextual_layer(self, cfg.sentence_head, hidden_size)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(hidden_size if cfg.sentence_head == "linear" else 2 * width, cfg.n_labels)

    def forward(self, hidden, attention_mask):
        hidden = self.mix(hidden)  # (B, T, H)
        if self.convs is not None or self.lstm is not None:
            # The mean says what the whole sentence is about; the max keeps the one word that decides it
            # ("play", "book", "rate") from being averaged away among the slot words.
            states = contextualise(self, hidden, attention_mask)  # (B, T, C)
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
    """(mix the layers) -> (convolutions or BiLSTM) -> dropout -> linear at every position; (CRF over the words).

    The logits at each word's first sub-token are that word's emission scores; the loss and decoding read
    only those (see `loss` and `decode`), so [CLS], [SEP], padding and continuation sub-tokens never count.
    """

    def __init__(self, hidden_size, cfg: HeadConfig, tags):
        super().__init__()
        self.mix = read_layers(cfg)
        width = add_contextual_layer(self, cfg.token_head, hidden_size)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(width, cfg.n_tags)
        self.crf = CRF(tags) if cfg.crf else None
        self.tags = tags  # BIO names: decoding never predicts a transition the scheme forbids

    def forward(self, hidden, attention_mask):
        x = self.mix(hidden)  # (B, T, H)
        x = contextualise(self, x, attention_mask)  # (B, T, C)
        return self.out(self.dropout(x))  # (B, T, K)

    def loss(self, logits, tags, words):
        """Token loss of one batch: logits (B, T, K), tags (B, T) with IGNORE_INDEX, words (B, W) the first
        sub-token position of each word, -1 past a sentence's last word.

        Without a CRF: cross-entropy at every labelled position. With one: the CRF's negative
        log-likelihood of each sentence's tag path over its words (every training word has a tag id,
        because the training split defines the tag vocabulary).
        """
        if self.crf is None:
            return F.cross_entropy(logits.flatten(0, 1), tags.flatten(), ignore_index=IGNORE_INDEX)
        emissions, mask = at_words(logits, words)
        return self.crf.nll(emissions.float(), tags.gather(1, words.clamp(min=0)), mask)

    def decode(self, emissions, lengths):
        """The best valid BIO path per sentence: emissions (B, W, K) are the logits at each word's first
        sub-token, lengths (B,) the word counts. Without a CRF, the best valid sequence of per-word softmax
        choices (crf.constrained_decode); with one, the CRF's Viterbi path."""
        emissions = emissions.float()
        if self.crf is not None:
            return self.crf.decode(emissions, lengths)
        return constrained_decode_batch(emissions.log_softmax(-1), lengths, self.tags)

    def entities(self, emissions, lengths, paths, temperature=1.0):
        """The entities of each decoded path, with the probability that each one is exactly right: per sentence,
        a list of (type, first word, last word, probability). `temperature`: the head's calibrated T
        (calibration.py), which changes these probabilities and never the paths.

        The probability is that of the entity itself, the words first..last being one X entity (B-X, then
        I-X, then no I-X), which is what a user acts on and what calibration judges: with a CRF, summed over
        every path that has it (CRF.chunk_probabilities); without one, where the words' tags are
        independent, the product of the words' softmax probabilities of B-X and I-X and of the next word's
        probability of not being I-X. A mean of the words' probabilities would call a five-word entity whose
        words are each 90% sure 90% sure, when all five are right together far less often.
        """
        found = [chunks([self.tags[k] for k in path]) for path in paths]
        # A type seen only in one-word entities has no I- tag: nothing can continue it (-1).
        continued_by = {kind: self.tags.index(f"I-{kind}") if f"I-{kind}" in self.tags else -1
                        for kind in {split_tag(tag)[1] for tag in self.tags}}
        ids = [[(self.tags.index(f"B-{kind}"), continued_by[kind], first, last) for kind, first, last in sentence]
               for sentence in found]
        emissions = emissions.float()
        if self.crf is not None:
            probabilities = self.crf.chunk_probabilities(emissions, lengths, ids, temperature)
        else:
            probabilities = word_product(emissions, lengths, ids, temperature)
        return [[(*chunk, p) for chunk, p in zip(sentence, ps)] for sentence, ps in zip(found, probabilities)]


def word_product(emissions, lengths, ids, temperature):
    """Without a CRF, an entity's probability: the product of its words' softmax probabilities of B-X and
    I-X and of the next word's probability of not being I-X. `ids`: per sentence, a list of (B-X id, I-X id or
    -1, first, last) -> per sentence, a list of floats. Every entity of the batch at once."""
    W = emissions.shape[1]
    b, begin, inside, first, last = chunk_columns(ids)  # every entity of the batch at once: (J,) each
    log_p = (emissions / temperature).log_softmax(-1)  # (B, W, K)
    # (J, W): each entity's words after its first
    within = (first[:, None] < torch.arange(W)) & (torch.arange(W) <= last[:, None])
    i_x = inside.clamp(min=0)  # a type with no I- tag has one-word entities only: nothing reads its I-X
    score = log_p[b, first, begin] + torch.where(within, log_p[b, :, i_x], 0).sum(1)  # (J,)
    after = (last + 1).clamp(max=W - 1)
    continues = (last + 1 < torch.as_tensor(lengths)[b]) & (inside >= 0)
    score = score + torch.where(continues, torch.log1p(-log_p[b, after, i_x].exp()), 0)
    return per_sentence(score.exp().tolist(), ids)


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
    def __init__(self, encoder, config: HeadConfig, tags=None, word_shapes=None):
        """`tags`: the BIO tag names (needed when config.n_tags > 0; a CRF and decoding read their scheme).
        `word_shapes`: None, or where a zero-initialised word-shape table is added (one of WORD_SHAPES)."""
        super().__init__()
        self.bert = encoder
        self.config = config
        self.word_shapes = word_shapes
        self.head_shapes = None  # the table, when the heads read the shapes (the frozen recipe)
        if word_shapes == "embeddings":
            encoder.embeddings.word_shapes = WordShapes(encoder.embeddings.word_embeddings.embedding_dim)
        elif word_shapes == "heads":
            self.head_shapes = WordShapes(encoder.config.hidden_size)
        elif word_shapes is not None:
            raise ValueError(f"word_shapes must be None or one of {WORD_SHAPES}, not {word_shapes!r}")
        H = encoder.config.hidden_size
        if not 1 <= config.layers <= encoder.config.num_hidden_layers + 1:
            raise ValueError(f"the heads cannot read {config.layers} layers of a "
                             f"{encoder.config.num_hidden_layers}-layer encoder")
        if config.n_tags and (tags is None or len(tags) != config.n_tags):
            raise ValueError(f"{config.n_tags} tags need their {config.n_tags} names")
        self.cls_head = ClassificationHead(H, config) if config.n_labels else None
        self.ner_head = TokenHead(H, config, list(tags)) if config.n_tags else None

    def features(self, input_ids, attention_mask, shape_ids=None):
        """What the heads read: the encoder's top `config.layers` hidden states (the frozen-backbone cache
        stores exactly this). `shape_ids` (B, T): each position's word shape (wordshape.py), when the model has
        word shapes."""
        return self.bert(input_ids, attention_mask, layers=self.config.layers, shape_ids=shape_ids)

    def forward(self, input_ids, attention_mask, hidden=None, shape_ids=None):
        """Both task outputs. `hidden`: what `features` returns, when it is already known (a frozen backbone's
        cache, features.py): (B, T, H), or (B, T, k, H) with several layers."""
        if hidden is None:
            hidden = self.features(input_ids, attention_mask, shape_ids)
        if self.head_shapes is not None:
            # Added to every layer a scalar mix reads: the mix is a weighted mean, so that is the same as adding
            # gamma * shape to the mix, whatever the head does next.
            shapes = self.head_shapes(shape_ids)  # (B, T, H)
            hidden = hidden + (shapes if hidden.dim() == 3 else shapes[:, :, None])
        return Outputs(
            self.cls_head(hidden, attention_mask) if self.cls_head is not None else None,
            self.ner_head(hidden, attention_mask) if self.ner_head is not None else None,
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


def multitask_loss(model, out: Outputs, batch, w_cls=1.0, w_ner=1.0):
    """w_cls * CE(sentence) + w_ner * token loss (masked CE, or the CRF's NLL), over the labels the batch has.

    `batch.labels` (B,) and `batch.tags` (B, T) use IGNORE_INDEX for "no label here": padding, [CLS]/[SEP],
    the continuation sub-tokens of a word, a class unseen in training, or a sentence from a dataset that
    only has the other task. A task with no label in the batch contributes nothing, instead of a 0/0 NaN.
    Returns (total, {task: loss}).
    """
    parts = {}
    labels, tags = batch.labels, batch.tags
    if out.cls_logits is not None and labels is not None and (labels != IGNORE_INDEX).any():
        parts["cls"] = F.cross_entropy(out.cls_logits, labels, ignore_index=IGNORE_INDEX)
    if out.ner_logits is not None and tags is not None and (tags != IGNORE_INDEX).any():
        parts["ner"] = model.ner_head.loss(out.ner_logits, tags, batch.words)
    weights = {"cls": w_cls, "ner": w_ner}
    total = sum(weights[task] * loss for task, loss in parts.items())
    return total, parts
