r"""LoRA: fine-tune a frozen encoder through small low-rank updates to some of its Linear layers.

Full fine-tuning changes every weight W of the encoder. LoRA freezes W and learns the change instead, as the
product of two thin matrices:

    y = W x + b + (alpha / r) * B (A (dropout(x)))        A: (r, in),  B: (out, r),  r << min(in, out)

so a wrapped Linear trains r * (in + out) numbers instead of in * out (r=8 on a 384 x 384 query: 6,144
instead of 147,456). The bet, which the paper measures, is that the change fine-tuning needs has a low
"intrinsic rank" even though W itself does not.

- B starts at zero and A at random. Then B A = 0: a freshly wrapped model computes exactly what the
  pretrained one does, and training starts from the pretrained function, not from a perturbed one. Only one
  of the two may be zero: with both at zero, each one's gradient (which is proportional to the other) would
  be zero too, and nothing would ever move.
- alpha / r: Adam moves each entry of B by about the learning rate per step whatever r is, so B A x, a sum
  over r directions, grows with r. Dividing by r keeps the update's size comparable across ranks: r can be
  changed without retuning the learning rate, and alpha is set once and left alone (the paper sets it to
  the first r it tries).
- After training, W + (alpha / r) B A is an ordinary weight matrix. `merged_state_dict` folds every update
  into its W, giving the state dict of the un-wrapped model: checkpoints, `load_encoder` and inference never
  need to know that LoRA was used, and the merged model is exactly as fast as the original.

API:
    TARGETS                 target name -> path of that Linear inside one encoder layer
    DEFAULT_TARGETS         ("query", "value"), the paper's choice
    LoRALinear(base, rank, alpha, dropout)      wraps an nn.Linear, kept as `.base`
    add_lora(encoder, rank, alpha, dropout, targets) -> [LoRALinear]   wraps in place, freezes the encoder
    merged_state_dict(model)  the un-wrapped model's state dict, updates folded in
    adapter_state_dict(model) only the lora_A / lora_B tensors
    lora_parameters(model)    the adapter parameters

A layer with adapters has trainable parameters, so MultiTaskModel.train() keeps it in train mode and the
adapter dropout is active; its frozen base Linears have no dropout of their own to worry about.

Reference: Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", https://arxiv.org/abs/2106.09685
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..guards.errors import UserError

# The path of each target inside one `bert.Layer`: also the middle of its state-dict names
# (bert.encoder.layer.0.attention.self.query.weight).
TARGETS = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention-output": "attention.output.dense",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
}
DEFAULT_TARGETS = ("query", "value")


class LoRALinear(nn.Module):
    """`base(x) + scaling * B(A(dropout(x)))`, with `base` frozen by the caller and A, B trainable."""

    def __init__(self, base: nn.Linear, rank, alpha, dropout):
        super().__init__()
        self.base = base  # a submodule, so its tensors are saved as `<name>.base.weight`
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, **kw))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, **kw))  # zero: B A = 0, see above
        # The init of the paper's reference code (loralib), which is also nn.Linear's default for its weight.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)
        self.scaling = alpha / rank

    def forward(self, x):
        # Two thin matmuls, never the full (out, in) product B A: that is r * (in + out) work per token
        # instead of in * out. While B = 0 the added term is exactly zero, so the output equals base(x).
        return self.base(x) + self.scaling * F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)

    def adapter_parameters(self):
        """What trains in place of the frozen `base` (freezing.py makes these the "adapters" unit)."""
        return [self.lora_A, self.lora_B]

    def delta_weight(self):
        """The update `scaling * B @ A` (out, in) that this adapter adds to base.weight."""
        return self.scaling * (self.lora_B @ self.lora_A)


def add_lora(encoder, rank, alpha, dropout, targets=DEFAULT_TARGETS):
    """Wrap the target Linears of every layer in place; returns the new LoRALinear modules.

    What trains is decided elsewhere, like every freezing decision (freezing.py): with adapters in the model,
    the whole backbone is frozen and the adapters' lora_A / lora_B learn in its place.
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise UserError(f"LoRA rank must be a positive integer, not {rank!r}")
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise UserError(f"unknown LoRA target {unknown[0]!r}: choose from {', '.join(TARGETS)}")
    # B A has rank at most min(in, out) of the Linear it adapts: a larger r adds parameters, not capacity.
    limit = min(min(encoder.layers[0].get_submodule(TARGETS[t]).weight.shape) for t in targets)
    if rank > limit:
        raise UserError(f"--lora {rank}: a rank-r update of these Linears has r at most {limit} (their smaller side)")
    wrapped = []
    for layer in encoder.layers:
        for target in dict.fromkeys(targets):  # a target named twice is wrapped once
            parent, _, name = TARGETS[target].rpartition(".")
            owner = layer.get_submodule(parent)
            lora = LoRALinear(getattr(owner, name), rank, alpha, dropout)
            setattr(owner, name, lora)  # replaces the registered submodule (nn.ModuleDict entries too)
            wrapped.append(lora)
    return wrapped


def _wrapped(model):
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


@torch.no_grad()
def merged_state_dict(model):
    """The state dict the un-wrapped model would have, with every adapter's update folded into its weight.

    `...query.base.weight` becomes `...query.weight` (= W + scaling * B A), `...query.base.bias` becomes
    `...query.bias`, and the lora_A / lora_B tensors are left out. Key order is the un-wrapped model's.
    """
    wrapped = _wrapped(model)
    merged = {}
    for key, value in model.state_dict().items():
        module, _, leaf = key.rpartition(".")
        if module in wrapped:  # lora_A, lora_B
            continue
        owner, _, child = module.rpartition(".")
        if child == "base" and owner in wrapped:
            key = f"{owner}.{leaf}"
            if leaf == "weight":
                value = value + wrapped[owner].delta_weight()
        merged[key] = value
    return merged


def adapter_state_dict(model):
    """Only the adapters, under their full names (`...query.lora_A`): all that training changed in the encoder."""
    return {f"{name}.{p}": getattr(m, p).detach()
            for name, m in _wrapped(model).items() for p in ("lora_A", "lora_B")}


def lora_parameters(model):
    return [p for m in _wrapped(model).values() for p in m.adapter_parameters()]
