"""Inference in less than float32: bf16 products, or the encoder's Linears in int8. One place decides which.

    model = for_inference(model, "int8", device)      # or "bf16", or "fp32" (unchanged)
    with autocast(device, "int8"):                     # bf16 autocast for "bf16"; nothing for the others
        out = model(input_ids, attention_mask)

Both are choices made when a checkpoint is *loaded*, never written back: the checkpoint on disk stays the
float32 model that training selected, so every precision can be tried on it, compared against it, and
dropped again; a smaller int8 file would save disk, but one more file format to read, check and keep in
step, for a model (90 MB for MiniLM) that is small already.

**bf16** (`--precision bf16`): torch.autocast runs the matrix products in bfloat16 (8 bits of mantissa,
float32's exponent range) and keeps LayerNorm, softmax and every accumulation in float32, exactly as
training's bf16 steps do. It pays only where the hardware multiplies bf16: on CUDA, and on CPUs with
AVX512-BF16 or AMX (`native_bf16_cpu`, the same test as training's `--precision auto`). Elsewhere
the products are emulated and slower than float32, so it is refused there rather than silently slow.

**int8** (`--precision int8`), dynamic quantisation of the encoder's Linears (`Int8Linear`):
- *weights*, once, when the model is loaded: each output channel (row of W) gets its own scale,
  max|row| / 127, and is rounded to int8. Per channel, because the rows of a trained matrix differ widely
  in size (in one of MiniLM's, the largest row's largest value is dozens of times the smallest row's); one
  scale for the whole matrix would spend most of the 255 levels of the small rows on a range they never use.
- *activations*, per call ("dynamic": no calibration data, nothing stored): each token's input row gets its
  own scale the same way. Transformer activations have a few outlier channels in a few tokens; a scale per
  token confines an outlier's damage to its own token.
- the product runs in integers, int8 x int8 summed in int32 (exact: 127² x 3072 < 2³¹), and one multiply
  by (token scale x channel scale) brings it back to float32, then the bias is added.
Only the Linears: they are nearly all of the encoder's arithmetic on sentence-length inputs (attention's
T x T products are small for T ~ 20). The embeddings are a table lookup, LayerNorm and softmax are cheap
and sensitive, and the heads are small and read by every prediction directly.

Why torch._int_mm and not a library: measured (docs/benchmarks.md, "int8 candidates"), the encoder runs
as fast with this module as with `torch.ao.quantization.quantize_dynamic`, which quantises each call's
activations per tensor, in 7 bits on x86 (a larger error for the same speed), and faster than torchao's
int8 dynamic config in eager mode. quantize_dynamic is deprecated ("will be removed", its
warning says) in favour of torchao, and torchao is a dependency pinned to torch versions whose API
has changed every few releases. torch._int_mm is the int8 product that torchao and torch.compile
themselves lower to, so it lives as long as they do; the rest is the twenty lines below, which say exactly
what is rounded where. (The int8 weight is stored as W^T, contiguous: the layout the CPU's int8 kernel
reads fastest; the transposed view of W would be copied or walked across at every call.)
"""

import torch
import torch.nn as nn

from ..guards.errors import UserError

PRECISIONS = ("fp32", "bf16", "int8")  # of inference; training has its own --precision (config.py)
INT8_MAX = 127  # symmetric: -127..127, so that negating a value never overflows


def native_bf16_cpu():
    """Whether this CPU multiplies bf16 matrices in hardware. Without it, bf16 is emulated and slower than fp32;
    with it (AVX512-BF16 or AMX), a bf16 product costs a fraction of an fp32 one, and a fine-tuning step is
    mostly products."""
    capabilities = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def quantize_rows(x):
    """(int8 values, float32 scale per row) of a (N, D) tensor: row i ~ q[i] * scale[i]."""
    scale = x.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12).div_(INT8_MAX)  # (N, 1); a zero row stays 0
    # No clamp needed: |x / scale| <= 127 up to a rounding error far below the 0.5 that round() would need.
    return (x / scale).round_().to(torch.int8), scale


class Int8Linear(nn.Module):
    """A Linear whose product runs in int8: weights quantised per output channel once, inputs per row at
    each call (see the module docstring). Inference only: it holds no parameters, so nothing can train it."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        q, scale = quantize_rows(linear.weight.detach().float())  # (out, in), (out, 1)
        self.register_buffer("weight_t", q.t().contiguous())  # (in, out): the layout _int_mm reads fastest
        self.register_buffer("weight_scale", scale.t().contiguous())  # (1, out)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())

    def forward(self, x):  # (..., in) -> (..., out)
        rows = x.reshape(-1, x.shape[-1]).float()  # (N, in)
        q, scale = quantize_rows(rows)  # (N, in) int8, (N, 1)
        # int8 x int8 summed in int32, made float32 before anything else: an int32 tensor times a float one
        # takes torch's slow mixed-type path, which costs more than the product itself.
        y = torch._int_mm(q, self.weight_t).float()  # (N, out)
        y.mul_(scale).mul_(self.weight_scale)  # back to the float scale: token's x channel's
        if self.bias is not None:
            y.add_(self.bias)
        return y.reshape(*x.shape[:-1], y.shape[-1])


def quantize_linears(module: nn.Module) -> int:
    """Replace every nn.Linear inside `module` by its Int8Linear, in place; how many were replaced."""
    count = 0
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            setattr(module, name, Int8Linear(child))
            count += 1
        else:
            count += quantize_linears(child)
    return count


def for_inference(model, precision, device):
    """`model` (a MultiTaskModel in eval mode) made ready to predict in `precision` on `device`; a
    precision the device cannot run well is a UserError naming --precision."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "bf16" and not (device.type == "cuda" or device.type == "cpu" and native_bf16_cpu()):
        raise UserError("--precision bf16 needs CUDA or a CPU that multiplies bf16 in hardware (AVX512-BF16 or "
                        "AMX); this one would emulate it, slower than fp32: use --precision fp32 or int8")
    if precision == "int8":
        if device.type != "cpu":
            raise UserError(f"--precision int8 runs on the CPU only, not on {device.type}: use bf16 there")
        quantize_linears(model.bert)  # the encoder only: the heads stay float32
    return model


def autocast(device, precision):
    """The context a forward pass in `precision` runs under: bf16 autocast for "bf16", nothing otherwise."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


def forward_in(model, device, precision):
    """`model`'s forward pass (the model, or anything called on a batch) under `autocast(device, precision)`:
    batch -> Outputs (what evaluation.head_outputs takes as its `forward`)."""
    def forward(batch):
        with autocast(device, precision):
            return model(batch)
    return forward
