"""The CUDA paths on a real GPU: the encoder's float32 numbers, bf16 training, the CRF and BiLSTM heads, the frozen
backbone's feature cache, and inference from a checkpoint trained on CUDA.

Every test here skips where torch.cuda.is_available() is false, so on the CPU-only CI this file only checks that
it still imports. scripts/gpu_check.sh runs it on a GPU machine (with the suite's other CUDA-conditional tests)
and collects what the tests measured: where $MINIMTL_GPU_OUT names a folder, `record` adds each figure to
MINIMTL_GPU_OUT/test_cuda_measurements.json.

The models are the suite's tiny random BERT (`tiny_weights`, conftest.py: 2 layers, 32 wide, the real
vocabulary) trained for one epoch on the shipped demo data through `python train.py`, as a user runs it; only
the encoder is built in-process (`from minimtl import Bert, BertConfig, load_encoder`). None of these tests
needs seqeval.

infer.py has no --device flag (it predicts on the CPU, whatever the checkpoint was trained on): the CLI test
therefore checks that a CUDA-trained checkpoint predicts and evaluates through infer.py, and --precision bf16,
the one flag of infer.py whose meaning names CUDA; if a --device flag appears it is used with `cuda`. The
Predictor itself is run on CUDA through load_predictor(..., device="cuda") where that function can be found.
"""

import copy
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minimtl import Bert, BertConfig, load_encoder

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "minimtl" / "demo"
TIMEOUT = 300  # seconds per train.py / infer.py run; each takes seconds on a GPU
TEXTS = ["Alice went to Paris last summer.", "Manchester United signed a Brazilian striker for 80 million euros.",
         "The Senate passed the budget bill after a long debate in Washington."]

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def record(key, value):
    """Add one measurement to $MINIMTL_GPU_OUT/test_cuda_measurements.json (nothing when it is unset)."""
    out = os.environ.get("MINIMTL_GPU_OUT")
    if not out:
        return
    path = Path(out) / "test_cuda_measurements.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data[key] = value
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def run(*argv, timeout=TIMEOUT):
    return subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def train(weights, out, *flags):
    """`python train.py` for 1 epoch of the demo data on CUDA into `out`: the finished process."""
    result = run("train.py", "--weights", weights, "--out", out, "--epochs", "1", "--device", "cuda", *flags)
    assert result.returncode == 0, \
        f"train.py {' '.join(map(str, flags))}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def results(out):
    return json.loads((Path(out) / "results.json").read_text(encoding="utf-8"))


def encoder_from(directory):
    """The encoder saved in `directory` (config.json + model.safetensors), built with the public Bert class."""
    from safetensors.torch import load_file

    config = BertConfig(**json.loads((Path(directory) / "config.json").read_text(encoding="utf-8")))
    encoder = Bert(config)
    encoder.load_state_dict(load_file(str(Path(directory) / "model.safetensors")))
    return encoder


def max_diff_cuda_vs_cpu(encoder, seed=0):
    """max |h_cuda - h_cpu| of the last hidden state over the real tokens of a padded random batch, float32."""
    g = torch.Generator().manual_seed(seed)
    vocab = encoder.config.vocab_size
    ids = torch.randint(1000, vocab, (4, 48), generator=g)
    mask = torch.ones_like(ids)
    for row, length in enumerate((48, 31, 7, 20)):
        mask[row, length:] = 0
    ids[:, 0] = 101
    ids[mask == 0] = 0
    cpu = encoder.float().eval()
    gpu = copy.deepcopy(cpu).to("cuda")
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # true float32 products (torch's default; set in case)
    try:
        with torch.no_grad():
            h_cpu = cpu(ids, mask)
            h_gpu = gpu(ids.cuda(), mask.cuda()).cpu()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    assert h_gpu.dtype == torch.float32 and h_gpu.shape == h_cpu.shape
    real = mask.bool()
    return (h_gpu[real] - h_cpu[real]).abs().max().item()


# --- the encoder ------------------------------------------------------------------------------------------------

def test_encoder_float32_on_cuda_equals_cpu(tiny_weights):
    diff = max_diff_cuda_vs_cpu(encoder_from(tiny_weights))
    record("encoder_tiny_fp32_cuda_vs_cpu_max_abs_diff", diff)
    assert diff <= 1e-5, diff


def test_pretrained_encoder_float32_on_cuda_is_close_to_cpu(checkpoint_dir):
    # The real 6-layer, 384-wide checkpoint (its hidden states reach several units): the same check with room
    # for its larger sums; the measured difference is recorded.
    diff = max_diff_cuda_vs_cpu(load_encoder(checkpoint_dir))
    record("encoder_default_fp32_cuda_vs_cpu_max_abs_diff", diff)
    assert diff <= 1e-4, diff


# --- training through train.py ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, tiny_weights):
    out = tmp_path_factory.mktemp("cuda-bf16") / "run"
    return out, train(tiny_weights, out, "--precision", "bf16")


def test_bf16_training_on_cuda(bf16_run):
    from safetensors.torch import load_file

    out, result = bf16_run
    assert "training steps in bf16 autocast on cuda" in result.stdout, result.stdout[-3000:]
    scores = results(out)
    test = scores["test"]
    assert 0 <= test["label_accuracy"] <= 1 and 0 <= test["entity_f1"] <= 1
    record("train_bf16_cuda_test", {k: test[k] for k in ("label_accuracy", "entity_f1", "frame_accuracy") if k in test})
    # bf16 autocast computes the products in bfloat16 and keeps every weight in float32
    tensors = load_file(str(out / "model.safetensors"))
    assert tensors and all(t.dtype == torch.float32 for t in tensors.values() if t.is_floating_point())
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


@pytest.mark.parametrize("flags, says", [(["--crf"], "+ CRF"),
                                         (["--token-head", "lstm"], "token head: a BiLSTM"),
                                         (["--crf", "--token-head", "lstm", "--sentence-head", "lstm"], "+ CRF")],
                         ids=["crf", "bilstm", "bilstm-crf"])
def test_crf_and_bilstm_heads_train_on_cuda(tiny_weights, tmp_path, flags, says):
    result = train(tiny_weights, tmp_path / "run", *flags)
    assert says in result.stdout and " on cuda" in result.stdout, result.stdout[-3000:]
    test = results(tmp_path / "run")["test"]
    assert 0 <= test["entity_f1"] <= 1 and 0 <= test["label_accuracy"] <= 1
    record(f"train_{'_'.join(f.strip('-') for f in flags)}_cuda_test_entity_f1", test["entity_f1"])


def test_frozen_backbone_builds_its_feature_cache_on_cuda(tiny_weights, tmp_path):
    result = train(tiny_weights, tmp_path / "run", "--freeze", "backbone")
    lines = [line for line in result.stdout.splitlines() if line.startswith("feature cache:")]
    assert any("encoded" in line and "once in" in line for line in lines), result.stdout[-3000:]
    record("frozen_cuda_feature_cache_line", lines[-1])
    assert (tmp_path / "run" / "results.json").is_file()


# --- inference from a CUDA-trained checkpoint -------------------------------------------------------------------

def test_infer_cli_on_a_cuda_trained_checkpoint(bf16_run):
    out, _ = bf16_run
    has_device = "--device" in run("infer.py", "--help").stdout
    record("infer_has_device_flag", has_device)
    device = ["--device", "cuda"] if has_device else []  # without it infer.py predicts on the CPU
    result = run("infer.py", "--checkpoint", out, "--json", *device, *TEXTS)
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = [json.loads(line) for line in result.stdout.splitlines()]
    assert [p["text"] for p in predictions] == TEXTS and all("label" in p and "tags" in p for p in predictions)

    # --precision bf16 is documented as "on CUDA or a CPU that multiplies bf16 in hardware": here it runs where
    # infer.py runs; on a CPU without bf16 hardware it must be the one-line refusal, exit 2.
    bf16 = run("infer.py", "--checkpoint", out, "--json", "--precision", "bf16", *device, *TEXTS)
    record("infer_bf16_exit_status", bf16.returncode)
    if bf16.returncode == 0:
        assert [json.loads(line)["label"] for line in bf16.stdout.splitlines()] == [p["label"] for p in predictions]
    else:
        assert bf16.returncode == 2 and bf16.stderr.startswith("error: --precision bf16 needs CUDA"), bf16.stderr

    evaluated = run("infer.py", "--checkpoint", out, "--evaluate", DEMO, "--json", *device)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads(evaluated.stdout)
    # infer.py scores on the CPU in float32, training's evaluation ran on CUDA in bf16: close, not equal
    keys = ("label_accuracy", "entity_f1", "frame_accuracy")
    record("cuda_trained_test_scores", {"infer_evaluate_cpu_fp32": {k: report["scores"].get(k) for k in keys},
                                        "results_json_cuda": {k: results(out)["test"].get(k) for k in keys}})


def find_load_predictor():
    for name in ("minimtl.machinery.checkpoint", "minimtl.machinery.predictor", "minimtl.checkpoint",
                 "minimtl.inference"):
        try:
            fn = getattr(importlib.import_module(name), "load_predictor", None)
        except ImportError:
            continue
        if fn is not None:
            return fn
    pytest.skip("load_predictor(directory, device, precision) not found in minimtl")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_predictor_on_cuda_agrees_with_cpu(bf16_run, precision):
    load_predictor = find_load_predictor()
    out, _ = bf16_run
    texts = [" ".join(json.loads(line)["tokens"])
             for line in (DEMO / "test.jsonl").read_text(encoding="utf-8").splitlines()[:64]]
    expected = load_predictor(out).predictions(texts)
    got = load_predictor(out, device="cuda", precision=precision).predictions(texts)
    assert [[w.text for w in p.words] for p in got] == [[w.text for w in p.words] for p in expected]
    same_labels = sum(p.label == e.label for p, e in zip(got, expected)) / len(texts)
    # a label may differ only where the CPU's own top two were nearly tied (the tiny model trained for one epoch
    # leaves many sentences near chance)
    tie = max((e.label_probability - e.labels.get(p.label, 0.0) for p, e in zip(got, expected)
               if p.label != e.label), default=0.0)
    gap = max(abs(p.label_probability - e.labels.get(p.label, 0.0)) for p, e in zip(got, expected))
    tags = [(a, b) for p, e in zip(got, expected) for a, b in zip(p.tags, e.tags)]
    same_tags = sum(a == b for a, b in tags) / len(tags)
    record(f"predictor_cuda_{precision}_vs_cpu", {"same_labels": same_labels, "widest_flipped_tie": tie,
                                                  "max_label_probability_gap": gap, "same_tags": same_tags})
    if precision == "fp32":  # the same numbers up to float32 rounding
        assert tie <= 1e-4 and gap <= 1e-4 and same_tags >= 0.99
    else:  # bf16 products: within bf16's rounding (test_inference_precision.py's bounds, on the CPU)
        assert tie <= 0.02 and gap <= 0.02 and same_tags >= 0.98
