"""--precision: which training steps run under bf16 autocast, and that nothing else changes precision.

bf16 autocast runs the matrix products in bfloat16 and keeps everything that accumulates (the weights, their
gradients, AdamW's moments) in float32; evaluation has its own precision (float32 on the CPU), so scores and
predictions do not depend on the precision a model was trained in.
"""

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file

from minimtl import UserError
from minimtl.machinery.settings import RunConfig, bf16_steps
from minimtl.extensions.precision import native_bf16_cpu
from minimtl.machinery.run import train

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_is_bf16_where_the_encoder_runs_on_bf16_hardware():
    auto = RunConfig().precision
    assert bf16_steps(auto, CUDA, cached=False) and bf16_steps(auto, CUDA, cached=True)
    assert bf16_steps(auto, CPU, cached=False) == native_bf16_cpu()
    assert not bf16_steps(auto, CPU, cached=True)  # heads alone on cached features: nothing to gain
    for device in (CPU, CUDA):
        for cached in (False, True):
            assert bf16_steps(RunConfig(precision="bf16").precision, device, cached)
            assert not bf16_steps(RunConfig(precision="fp32").precision, device, cached)


def test_precision_must_be_known():
    with pytest.raises(UserError, match="--precision must be one of auto, bf16, fp32, not 'fp16'"):
        RunConfig(precision="fp16").check()


def linear_output_dtypes(tiny_data, tiny_weights, out, **settings):
    """{(training?, dtype)} of every Linear output during a 1-epoch run, and the saved model's dtypes."""
    seen = set()

    def hook(module, inputs, output):
        if isinstance(module, nn.Linear):
            seen.add((module.training, output.dtype))
    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        train(RunConfig(data=[str(tiny_data)], weights=str(tiny_weights), out=str(out), epochs=1, batch_size=8,
                          **settings), log=lambda _: None)
    finally:
        handle.remove()
    return seen, {t.dtype for t in load_file(out / "model.safetensors").values()}


def test_bf16_runs_training_products_in_bf16_and_keeps_weights_and_evaluation_in_fp32(tiny_data, tiny_weights,
                                                                                      tmp_path):
    seen, saved = linear_output_dtypes(tiny_data, tiny_weights, tmp_path / "bf16", precision="bf16")
    assert seen == {(True, torch.bfloat16), (False, torch.float32)}  # training steps, then dev and test
    assert saved == {torch.float32}
    seen, saved = linear_output_dtypes(tiny_data, tiny_weights, tmp_path / "fp32", precision="fp32")
    assert seen == {(True, torch.float32), (False, torch.float32)}
    assert saved == {torch.float32}


def test_cached_heads_train_in_fp32_under_auto(tiny_data, tiny_weights, tmp_path):
    seen, _ = linear_output_dtypes(tiny_data, tiny_weights, tmp_path / "frozen", freeze=["backbone"])
    assert seen == {(True, torch.float32), (False, torch.float32)}
