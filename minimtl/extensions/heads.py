"""What a head may put between the encoder and its output layer: a scalar mix of layers, a BiLSTM, convolutions.

Handed to the core's heads as their `mix` and `neck` (model.py); the model builder decides which
(machinery/assemble.py, from the recipe).

These are what make a *frozen* backbone nearly as good as fine-tuning it:
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
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

HEAD_KINDS = ("linear", "conv", "lstm")  # what a head puts between the (mixed) states and its output layer
LSTM_HIDDEN = 128  # per direction: less than half the cost of 256 per token, and cached epochs must stay cheap
CONV_WIDTH = 128  # channels of the dilated convolutions: their products are most of a cached step's time
DILATIONS = (1, 2, 4)  # one block: each layer sees 3 positions `d` apart, so the block sees 1 + 2 * (1+2+4) = 15
CONV_ITERATIONS = 2  # the block applied twice with the same weights: 29 positions, at no extra parameter


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

    width = 2 * LSTM_HIDDEN

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

    width = CONV_WIDTH

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


def neck(kind, input_size):
    """The layer a head of `kind` puts before its output layer: None for "linear", else a module with `width`."""
    if kind == "linear":
        return None
    return DilatedConvs(input_size) if kind == "conv" else BiLSTM(input_size)


def mix(layers):
    """What turns the encoder's top `layers` states into one (B, T, H) tensor for a head: a scalar mix, or None."""
    return ScalarMix(layers) if layers > 1 else None
