"""The frozen backbone's feature cache never outgrows its memory budget (--cache-memory): its size is known
before it is built, and a cache over the budget is not built; the frozen encoder then runs in every step,
which trains the same model up to the cache's float16 rounding."""

import json

import pytest

from minimtl.config import TrainConfig
from minimtl.features import FeatureCache
from minimtl.machinery.run import build, train

QUIET = lambda line: None  # noqa: E731


def frozen(tiny_data, tiny_weights, out, **settings):
    return TrainConfig(data=[str(tiny_data)], weights=str(tiny_weights), out=str(out), freeze=["backbone"],
                       epochs=2, batch_size=8, patience=0, device="cpu", **settings)


def test_the_size_of_a_cache_is_known_exactly_before_it_is_built(tiny_data, tiny_weights, tmp_path):
    model, sources, _, _ = build(frozen(tiny_data, tiny_weights, tmp_path / "out"), QUIET)
    expected = FeatureCache.size(model, sources, ("train", "dev"))
    cache = FeatureCache(model, sources, ("train", "dev"), QUIET)
    built = sum(flat.numel() * flat.element_size() + starts.numel() * starts.element_size()
                for flat, starts in cache.states.values())
    assert expected == built


def losses(out):
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_over_the_budget_the_encoder_runs_on_the_fly_and_trains_the_same_model(tiny_data, tiny_weights, tmp_path):
    lines = []
    on_the_fly = train(frozen(tiny_data, tiny_weights, tmp_path / "fly", cache_memory=1e-9), log=lines.append)
    cached = train(frozen(tiny_data, tiny_weights, tmp_path / "cached"), log=QUIET)
    [said] = [line for line in lines if line.startswith("feature cache:")]
    assert "would not fit in the budget" in said and "the frozen encoder runs in every step instead" in said
    # The cache stores float16 features (11 significant bits): the two agree to that precision, not to the bit.
    assert losses(tmp_path / "fly") == pytest.approx(losses(tmp_path / "cached"), rel=1e-2)
    for split in ("dev", "test"):
        for metric, value in cached[split].items():
            assert on_the_fly[split][metric] == pytest.approx(value, abs=0.05), (split, metric)
