"""The frozen backbone's feature cache never outgrows its budgets: its size is known exactly before it is
built; within --cache-memory it is kept in memory, beyond it in a temporary file (bit for bit the same
features), and where neither has room the frozen encoder runs in every step, which trains the same model up
to the cache's float16 rounding. A memory budget too small for one batch is refused before anything is
written."""

import json
import os
import tempfile

import pytest
import torch

from minimtl import UserError
from minimtl.batching import batches
from minimtl.machinery.settings import RunConfig
from minimtl.extensions.features import FeatureCache
from minimtl.machinery.run import build, train

QUIET = lambda line: None  # noqa: E731


def frozen(tiny_data, tiny_weights, out, **settings):
    return RunConfig(data=[str(tiny_data)], weights=str(tiny_weights), out=str(out), freeze=["backbone"],
                       epochs=2, batch_size=8, patience=0, device="cpu", **settings)


def test_the_size_of_a_cache_is_known_exactly_before_it_is_built(tiny_data, tiny_weights, tmp_path):
    model, sources, _, _ = build(frozen(tiny_data, tiny_weights, tmp_path / "out"), QUIET)
    expected = FeatureCache.size(model, sources, ("train", "dev"))
    cache = FeatureCache(model, sources, ("train", "dev"), QUIET)
    built = sum(flat.numel() * flat.element_size() + starts.numel() * starts.element_size()
                for flat, starts in cache.states.values())
    assert expected == built


def test_the_cache_read_back_from_disk_equals_the_cache_in_memory_bit_for_bit(tiny_data, tiny_weights, tmp_path):
    model, sources, _, _ = build(frozen(tiny_data, tiny_weights, tmp_path / "out"), QUIET)
    in_memory = FeatureCache(model, sources, ("train", "dev"), QUIET)
    with tempfile.TemporaryFile(dir=tmp_path) as file:
        on_disk = FeatureCache(model, sources, ("train", "dev"), QUIET, file=file)
        assert os.fstat(file.fileno()).st_size == FeatureCache.size(model, sources, ("train", "dev")) \
            - sum(8 * len(s.ids[split]) for s in sources for split in ("train", "dev"))  # the rows, not the starts
        for source in sources:
            for split in ("train", "dev"):
                for batch in batches(source.ids[split], 3):  # padded batches: padding reads zeros from both
                    a = in_memory.hidden(source.name, split, batch)
                    b = on_disk.hidden(source.name, split, batch)
                    assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b)


def losses(out):
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def said(lines):
    return [line for line in lines if line.startswith("feature cache:")]


def test_over_the_memory_budget_the_cache_goes_to_disk_and_trains_the_same_model(tiny_data, tiny_weights, tmp_path):
    model, sources, _, _ = build(frozen(tiny_data, tiny_weights, tmp_path / "memory"), QUIET)
    one_batch = 8 * 128 * FeatureCache.token_bytes(model)  # --batch-size 8, --max-len 128
    assert FeatureCache.size(model, sources, ("train", "dev")) > one_batch
    lines = []
    on_disk = train(frozen(tiny_data, tiny_weights, tmp_path / "disk", cache_memory=one_batch / 2**30), log=lines.append)
    in_memory = train(frozen(tiny_data, tiny_weights, tmp_path / "memory"), log=QUIET)
    assert f"kept on disk (over the memory budget of {one_batch / 2**20:.1f} MiB (--cache-memory)" in said(lines)[0]
    assert "on disk); the heads train" in said(lines)[1]
    assert losses(tmp_path / "disk") == losses(tmp_path / "memory") and on_disk == in_memory
    # The file had no name and is gone with the run: beside it, only the two run directories.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk", "memory"]


def test_without_a_cache_the_encoder_runs_on_the_fly_and_trains_the_same_model(tiny_data, tiny_weights, tmp_path):
    lines = []
    on_the_fly = train(frozen(tiny_data, tiny_weights, tmp_path / "fly", feature_cache="off"), log=lines.append)
    cached = train(frozen(tiny_data, tiny_weights, tmp_path / "cached"), log=QUIET)
    assert said(lines) == [said(lines)[0]] and "not built: the frozen encoder runs in every step" in said(lines)[0]
    # The cache stores float16 features (11 significant bits): the two agree to that precision, not to the bit.
    assert losses(tmp_path / "fly") == pytest.approx(losses(tmp_path / "cached"), rel=1e-2)
    for split in ("dev", "test"):
        for metric, value in cached[split].items():
            assert on_the_fly[split][metric] == pytest.approx(value, abs=0.05), (split, metric)


def test_a_memory_budget_that_cannot_hold_one_batch_is_refused_before_anything_is_written(tiny_data, tiny_weights,
                                                                                         tmp_path):
    with pytest.raises(UserError, match=r"--cache-memory 1e-06 GiB cannot hold even one batch of features"):
        train(frozen(tiny_data, tiny_weights, tmp_path / "run", cache_memory=1e-6), log=QUIET)
    assert list(tmp_path.iterdir()) == []
