"""infer.py --precision: int8 and bf16 predictions stay close to float32, the checkpoint is only read, and a
precision that cannot run here is one line and exit 2.

Bounds, on the small random checkpoint (small_checkpoint.py) and the demo test sentences: every sentence label
the same as float32's, label probabilities within 0.01, and at least 99% of the word tags the same (its
random weights leave many tags nearly tied; a trained model's margins are wider, docs/benchmarks.md).
"""

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import minimtl.extensions.precision
from minimtl.guards.errors import UserError
from minimtl.machinery.checkpoint import load_checkpoint, load_predictor
from minimtl.extensions.precision import Int8Linear, for_inference, quantize_linears, quantize_rows

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [" ".join(json.loads(line)["tokens"])
         for line in (ROOT / "minimtl" / "demo" / "test.jsonl").read_text(encoding="utf-8").splitlines()[:64]]

pytestmark = pytest.mark.usefixtures("one_thread")  # small, predictor, one_thread: small_checkpoint.py


@pytest.fixture
def native_bf16(monkeypatch):
    """bf16 allowed on this CPU whatever it has: emulated bf16 computes the same numbers, only slower."""
    monkeypatch.setattr(minimtl.extensions.precision, "native_bf16_cpu", lambda: True)


def test_int8_linear_is_exact_on_its_grid():
    # Integer weights and inputs whose every row reaches 127: both scales are 1, so nothing is rounded and
    # the int8 product must equal the float one exactly.
    torch.manual_seed(0)
    linear = nn.Linear(48, 24)
    w = torch.randint(-127, 128, (24, 48)).float()
    w[:, 0] = 127
    x = torch.randint(-127, 128, (5, 7, 48)).float()
    x[..., 3] = -127
    with torch.no_grad():
        linear.weight.copy_(w)
    assert torch.equal(Int8Linear(linear)(x), linear(x).detach())


def test_each_rows_largest_value_becomes_127():
    torch.manual_seed(0)
    x = torch.randn(1000, 64) * torch.logspace(-8, 8, 1000)[:, None]  # rows of very different sizes
    x[0] = 0
    q, scale = quantize_rows(x)
    assert q.dtype == torch.int8 and torch.equal(q[1:].abs().amax(1), torch.full((999,), 127, dtype=torch.int8))
    assert not q[0].any()
    assert ((q.float() * scale - x).abs() <= scale / 2 * (1 + 1e-6)).all()  # off by at most half a step


def test_int8_linear_error_is_that_of_rounding():
    # A scale per token: a token's error is set by its own largest value, whatever the other tokens hold.
    # Here 50 of the 200 tokens are 10x larger; one scale for the whole input (quantize_dynamic's way)
    # would round the small ones on a grid 10x too coarse.
    torch.manual_seed(0)
    linear = nn.Linear(384, 1536)
    x = torch.randn(200, 384)
    x[:50] *= 10
    expected = linear(x).detach()
    error = lambda y: float((y - expected).norm() / expected.norm())
    step = x.abs().max() / 127
    weight, scale = quantize_rows(linear.weight.detach())  # the int8 weights, per output channel
    per_tensor = (torch.round(x / step) * step) @ (weight.float() * scale).t() + linear.bias.detach()
    assert error(Int8Linear(linear)(x)) < 0.01 < error(per_tensor)


def test_only_the_encoders_linears_become_int8(small):
    model, _ = load_checkpoint(small)
    linears = sum(type(m) is nn.Linear for m in model.bert.modules())
    for_inference(model, "int8", "cpu")
    assert sum(type(m) is Int8Linear for m in model.bert.modules()) == linears == 2 * 6
    assert not any(type(m) is nn.Linear for m in model.bert.modules())
    assert any(type(m) is nn.Linear for m in model.ner_head.modules())  # the heads stay float32
    assert quantize_linears(nn.Sequential()) == 0


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_predictions_agree_with_float32(small, predictor, precision, native_bf16):
    expected, got = predictor.predictions(TEXTS), load_predictor(small, precision=precision).predictions(TEXTS)
    assert [p.label for p in got] == [p.label for p in expected]
    assert max(abs(p.label_probability - e.labels[p.label]) for p, e in zip(got, expected)) <= 0.01
    tags = [(a, b) for p, e in zip(got, expected) for a, b in zip(p.tags, e.tags)]
    assert len(tags) > 1000 and sum(a == b for a, b in tags) >= 0.99 * len(tags)
    # Not the same numbers, though: the precision is really used.
    assert any(p.label_probability != e.label_probability for p, e in zip(got, expected))


def test_bf16_is_refused_without_native_bf16(small, monkeypatch):
    monkeypatch.setattr(minimtl.extensions.precision, "native_bf16_cpu", lambda: False)
    with pytest.raises(UserError, match="--precision bf16 needs CUDA or a CPU"):
        load_predictor(small, precision="bf16")
    model, _ = load_checkpoint(small)
    with pytest.raises(UserError, match="int8 runs on the CPU only"):
        for_inference(model, "int8", "cuda")
    with pytest.raises(UserError, match="--precision must be one of fp32, bf16, int8"):
        for_inference(model, "fp16", "cpu")


def run_infer(argv, monkeypatch, capsys):
    """infer.py's main() in this process: (exit code, stdout, stderr)."""
    spec = importlib.util.spec_from_file_location("infer_cli", ROOT / "infer.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    monkeypatch.setattr(sys, "argv", ["infer.py", *map(str, argv)])
    threads = torch.get_num_threads()
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("evaluate", [False, True])
def test_cli_refuses_bf16_without_native_bf16_in_one_line(small, tiny_data, monkeypatch, capsys, evaluate):
    monkeypatch.setattr(minimtl.extensions.precision, "native_bf16_cpu", lambda: False)
    argv = ["--checkpoint", small, "--precision", "bf16", *(["--evaluate", tiny_data] if evaluate else ["Paris"])]
    code, out, err = run_infer(argv, monkeypatch, capsys)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: --precision bf16 needs CUDA"), err


def digests(directory):
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(Path(directory).iterdir())}


def test_cli_int8_and_bf16_leave_the_checkpoint_as_it_was(small, tiny_data, tmp_path, monkeypatch, capsys,
                                                          native_bf16):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS[:8]) + "\n", encoding="utf-8")
    before = digests(small)
    results = {}
    for precision in ("fp32", "int8", "bf16"):
        code, out, err = run_infer(["--checkpoint", small, "--precision", precision, "--file", texts, "--json"],
                                   monkeypatch, capsys)
        assert code == 0, err
        results[precision] = [json.loads(line)["label"] for line in out.splitlines()]
        code, out, err = run_infer(["--checkpoint", small, "--precision", precision, "--evaluate", tiny_data,
                                    "--json"], monkeypatch, capsys)
        assert code == 0, err
        results[precision, "evaluate"] = json.loads(out)["scores"]
    assert digests(small) == before  # same files, same bytes, not even rewritten with them
    assert results["int8"] == results["bf16"] == results["fp32"] and len(results["fp32"]) == 8
    for precision in ("int8", "bf16"):
        scores, expected = results[precision, "evaluate"], results["fp32", "evaluate"]
        assert scores.keys() == expected.keys()
        assert all(abs(scores[k] - expected[k]) <= 0.05 for k in expected if "support" not in k)


def test_cli_bad_precision_is_one_line_and_exit_2(small):
    done = subprocess.run([sys.executable, str(ROOT / "infer.py"), "--checkpoint", str(small), "--precision",
                           "fp16", "Paris"], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2 and done.stdout == ""
    # argparse prints its usage first; the error is its last line, naming the flag and the value.
    last = done.stderr.splitlines()[-1]
    assert "--precision" in last and "'fp16'" in last and "Traceback" not in done.stderr, done.stderr
