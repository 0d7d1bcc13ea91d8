"""scripts/gpu_pack.py and scripts/gpu_check.sh, on the CPU: the pack round trip (float16 weights restored to
float32 equal the float16-rounded originals, every file in the manifest with its size and sha256), its
deterministic subsampling, and the check script's dry run writing a complete gpu_check.json.

The GPU run itself (scripts/gpu_check.sh OUTDIR on a CUDA machine) cannot run here; its dry run takes every step
with --device cpu, the tiny random BERT and the tiny demo subset, and must stay within seconds. The one test that
packs the real data sets skips where ../shared/data is absent.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def load_gpu_pack():
    spec = importlib.util.spec_from_file_location("gpu_pack", ROOT / "scripts" / "gpu_pack.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_pack = load_gpu_pack()


def sha256(path):
    return gpu_pack.sha256(path)


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def tiny_pack(tmp_path_factory, tiny_weights):
    """The suite's tiny random BERT packed alone (no data sets)."""
    out = tmp_path_factory.mktemp("pack") / "gpu_pack"
    manifest = gpu_pack.pack(out, tiny_weights, data_root=tmp_path_factory.mktemp("no-data"), datasets=(),
                             log=quiet)
    return out, manifest


def test_restore_gives_the_float16_rounded_weights_in_float32(tiny_pack, tiny_weights, tmp_path):
    out, manifest = tiny_pack
    original = load_file(str(tiny_weights / "model.safetensors"))
    packed = load_file(str(out / manifest["weights_dir"] / gpu_pack.PACKED_WEIGHTS))
    assert packed.keys() == original.keys()
    assert all(packed[k].dtype == (torch.float16 if v.dtype == torch.float32 else v.dtype) for k, v in original.items())

    info = gpu_pack.restore(out, tmp_path / "restored")
    restored = load_file(str(tmp_path / "restored" / "model.safetensors"))
    assert restored.keys() == original.keys()
    for name, tensor in original.items():
        assert restored[name].dtype == tensor.dtype, name
        expected = tensor.to(torch.float16).to(torch.float32) if tensor.dtype == torch.float32 else tensor
        assert torch.equal(restored[name], expected), name
    assert any(not torch.equal(restored[k], original[k]) for k in original)  # float16 really rounded something
    # the checkpoint's other files come along unchanged: the folder is usable as --weights
    for name in ("config.json", "vocab.txt", "tokenizer_config.json"):
        assert (tmp_path / "restored" / name).read_bytes() == (tiny_weights / name).read_bytes()
    assert info["float32_tensors"] == sum(t.dtype == torch.float32 for t in original.values())
    assert info["source_sha256"] == sha256(tiny_weights / "model.safetensors") and not info["bit_identical_to_source"]


def test_manifest_records_every_file_with_its_size_and_sha256(tiny_pack, tiny_weights):
    out, manifest = tiny_pack
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    for rel, entry in manifest["files"].items():
        assert entry["bytes"] == (out / rel).stat().st_size and entry["sha256"] == sha256(out / rel), rel
    assert manifest["total_bytes"] == sum(e["bytes"] for e in manifest["files"].values())
    assert manifest["weights"]["source_bytes"] == (tiny_weights / "model.safetensors").stat().st_size
    packed = out / manifest["weights_dir"] / gpu_pack.PACKED_WEIGHTS
    assert packed.stat().st_size < 0.6 * manifest["weights"]["source_bytes"]  # float16: about half
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert gpu_pack.verify(out) == manifest


def test_a_changed_file_or_a_full_folder_is_refused(tiny_pack, tiny_weights, tmp_path):
    out, _ = tiny_pack
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    config = next(copy.rglob("config.json"))
    config.write_bytes(config.read_bytes() + b" ")
    with pytest.raises(gpu_pack.PackError, match="do not match manifest.json"):
        gpu_pack.restore(copy, tmp_path / "restored")
    assert not (tmp_path / "restored").exists()
    with pytest.raises(gpu_pack.PackError, match="not an empty folder"):
        gpu_pack.pack(copy, tiny_weights, datasets=(), log=quiet)  # an existing pack without overwrite
    with pytest.raises(gpu_pack.PackError, match="over the budget"):
        gpu_pack.pack(tmp_path / "small", tiny_weights, datasets=(), budget_mib=0.5, log=quiet)
    assert not (tmp_path / "small").exists() and not list(tmp_path.glob(".small.tmp-*"))


def fake_data(root, copies):
    """The three formats the pack reads, from the demo set's first sentences; the training splits `copies`
    times longer (a CoNLL document per sentence)."""
    records = [json.loads(line) for line in (ROOT / "minimtl" / "demo" / "train.jsonl").read_text().splitlines()[:40]]
    for split, n in (("train", copies), ("dev", 1), ("test", 1)):
        rows = records * n
        d = root / "snips" / split
        d.mkdir(parents=True)
        (d / "seq.in").write_text("".join(" ".join(r["tokens"]) + "\n" for r in rows))
        (d / "seq.out").write_text("".join(" ".join(r["tags"]) + "\n" for r in rows))
        (d / "label").write_text("".join(r["label"] + "\n" for r in rows))
        (root / "conll2003").mkdir(exist_ok=True)
        (root / "conll2003" / f"{split}.txt").write_text("".join(
            "-DOCSTART- -X- -X- O\n\n" + "".join(f"{w} NN O {t}\n" for w, t in zip(r["tokens"], r["tags"])) + "\n"
            for r in rows))
        (root / "ag_news").mkdir(exist_ok=True)
        (root / "ag_news" / f"{split}.csv").write_text("".join(
            f'"{" ".join(r["tokens"])}, ""quoted""\nover two lines",{i % 4}\n' for i, r in enumerate(rows)))
    (root / "ag_news" / "classes.txt").write_text("world\nsports\nbusiness\ntech\n")


def test_data_over_the_budget_is_subsampled_deterministically(tmp_path, tiny_weights):
    fake_data(tmp_path / "data", copies=60)
    full = gpu_pack.pack(tmp_path / "whole", tiny_weights, tmp_path / "data", log=quiet)
    assert not any(d["subsampled"] for d in full["data"].values())
    train_bytes = sum(gpu_pack.data_bytes(tmp_path / "data" / n, n, train_only=True) for n in gpu_pack.DATASETS)
    budget = (full["total_bytes"] - train_bytes / 2) / gpu_pack.MiB
    a = gpu_pack.pack(tmp_path / "a", tiny_weights, tmp_path / "data", budget_mib=budget, log=quiet)
    b = gpu_pack.pack(tmp_path / "b", tiny_weights, tmp_path / "data", budget_mib=budget, log=quiet)
    assert a["total_bytes"] <= budget * gpu_pack.MiB
    assert {k: v["sha256"] for k, v in a["files"].items()} == {k: v["sha256"] for k, v in b["files"].items()}
    for name, entry in a["data"].items():
        assert entry["subsampled"], name
        train, dev = entry["splits"]["train"], entry["splits"]["dev"]
        assert 0 < train["taken"] < train["of"] == 2400 and dev["taken"] == dev["of"] == 40, (name, entry)
    snips = tmp_path / "a" / "data" / "snips" / "train"
    lines = {f: (snips / f).read_text().splitlines() for f in ("seq.in", "seq.out", "label")}
    taken = a["data"]["snips"]["splits"]["train"]["taken"]
    assert len(lines["seq.in"]) == len(lines["seq.out"]) == len(lines["label"]) == taken
    assert all(len(w.split()) == len(t.split()) for w, t in zip(lines["seq.in"], lines["seq.out"]))
    conll = (tmp_path / "a" / "data" / "conll2003" / "train.txt").read_text()
    assert conll.count("-DOCSTART-") == a["data"]["conll2003"]["splits"]["train"]["taken"]
    csv = (tmp_path / "a" / "data" / "ag_news" / "train.csv").read_text()
    assert csv.count("over two lines") == a["data"]["ag_news"]["splits"]["train"]["taken"]
    assert (tmp_path / "a" / "data" / "snips" / "dev" / "seq.in").read_bytes() == \
        (tmp_path / "data" / "snips" / "dev" / "seq.in").read_bytes()


@pytest.mark.skipif(not (SHARED_DATA / "snips").is_dir(), reason="needs the real data in ../shared/data")
def test_the_real_pack_fits_its_budget_whole(tmp_path, checkpoint_dir):
    manifest = gpu_pack.pack(tmp_path / "gpu_pack", checkpoint_dir, SHARED_DATA, log=quiet)
    assert manifest["total_bytes"] <= 60 * gpu_pack.MiB
    assert not any(d["subsampled"] for d in manifest["data"].values())
    assert manifest["data"]["snips"]["splits"]["train"]["taken"] == 13084
    assert manifest["weights"]["converted_to_float16"] > 100 and manifest["weights"]["kept_float32"] == []


def test_the_dry_run_writes_a_complete_gpu_check_json(tiny_pack, tiny_data, tmp_path):
    pack_dir, _ = tiny_pack
    env = {**os.environ, "MINIMTL_GPU_PACK": str(pack_dir), "MINIMTL_GPU_DRY_DATA": str(tiny_data),
           "MINIMTL_GPU_WORK": str(tmp_path / "work")}
    env.pop("MINIMTL_GPU_WEIGHTS", None)
    result = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(tmp_path / "out")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["finished"] and report["dry_run"] and report["device"] == "cpu"
    for key in ("gpu_name", "torch_version", "cuda_version", "env", "restore", "tests", "snips_full",
                "conll_ag_frozen", "bench_train_step", "infer_throughput", "torchrun", "steps", "elapsed_s"):
        assert key in report, key
    assert report["torch_version"] == torch.__version__
    steps = report["steps"]
    why = {name: s.get("stderr_tail", "")[-800:] for name, s in steps.items() if s["status"] != "ok"}
    for name in ("env", "restore", "tests", "snips_full", "conll_ag_frozen", "bench_train_step", "infer_fp32_1",
                 "torchrun"):
        assert steps[name]["status"] == "ok", (name, why)
        assert steps[name]["exit_status"] == 0 and steps[name]["seconds"] > 0 and "command" in steps[name]
    # bf16 on a CPU runs where the CPU has bf16 products in hardware, and is otherwise infer.py's one-line refusal
    bf16 = steps["infer_bf16_1"]
    assert bf16["status"] == "ok" or "--precision bf16 needs" in bf16["stderr_tail"], bf16

    assert report["restore"]["restored"]["float32_tensors"] > 0 and report["restore"]["weights"].startswith(
        str(tmp_path / "work"))
    assert report["tests"]["counts"]["failed"] == report["tests"]["counts"]["errors"] == 0
    assert 0 <= report["snips_full"]["test"]["label_accuracy"] <= 1 and report["snips_full"]["wall_s"] > 0
    frozen = report["conll_ag_frozen"]  # two sources, as on the GPU: "source/metric" keys, per-type ones left out
    assert set(frozen["test"]) >= {"ag_news/label_accuracy", "conll2003/entity_f1"} and frozen["wall_s"] > 0
    assert not any("LOC" in key for key in frozen["test"]) and "conll2003/entity_f1/LOC" in json.loads(
        (tmp_path / "out" / "results" / "conll_ag_frozen.json").read_text())["test"]
    assert frozen["feature_cache_line"].startswith("feature cache:") and frozen["feature_cache_s"] >= 0
    assert frozen["feature_cache_sentences"] >= 2 * 64  # each source's 48 training and 16 dev sentences at least
    fp32 = report["infer_throughput"]["fp32"]
    assert fp32["sentences_per_s"] > 0 and fp32["runs"][0]["lines_out"] == report["infer_throughput"]["sentences"]
    assert report["torchrun"]["backend"] == "gloo"
    # what comes back from the GPU machine stays small: no checkpoints in OUTDIR
    assert sum(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file()) < 2 * 2**20
    assert (tmp_path / "out" / "results" / "snips_full.json").is_file()
