"""The training loop, end to end on a tiny random BERT: freezing holds, runs repeat, files are right."""

import json

import pytest
import torch
from safetensors.torch import load_file

from minimtl import UserError, load_encoder
from minimtl.machinery.assemble import HeadConfig, build_model
from minimtl.machinery.settings import RunConfig
from minimtl.machinery.run import build, train
from minimtl.training import lr_factor, seed_everything


def run(tiny_data, tiny_weights, out, **overrides):
    settings = dict(epochs=2, batch_size=8, lr_backbone=1e-3, lr_heads=1e-2) | overrides
    cfg = RunConfig(data=[str(tiny_data)], weights=str(tiny_weights), out=str(out), **settings)
    lines = []
    results = train(cfg, log=lines.append)
    return results, lines


def initial_tensors(tiny_weights):
    return {"bert." + k: v for k, v in load_file(tiny_weights / "model.safetensors").items()}


def initial_heads(tiny_weights, out, seed):
    """The heads of the run in `out` as that run, seeded with `seed`, initialised them (after the encoder)."""
    meta = json.loads((out / "config.json").read_text())["minimtl"]
    seed_everything(seed)
    model = build_model(load_encoder(tiny_weights), HeadConfig(**meta["heads"]), meta["tags"], meta["word_shapes"])
    return {k: v for k, v in model.state_dict().items() if not k.startswith("bert.")}


def test_frozen_backbone_is_bit_for_bit_unchanged_and_heads_learn(tiny_data, tiny_weights, tmp_path):
    results, lines = run(tiny_data, tiny_weights, tmp_path / "out", freeze=["backbone"], epochs=1)
    assert any(line.startswith("feature cache:") for line in lines)
    saved = load_file(tmp_path / "out" / "model.safetensors")
    before = initial_tensors(tiny_weights)
    for name, tensor in before.items():
        assert torch.equal(saved[name], tensor), name
    start = initial_heads(tiny_weights, tmp_path / "out", seed=0)
    assert start.keys() == {k for k in saved if not k.startswith("bert.")}
    for name, tensor in start.items():
        assert not torch.equal(saved[name], tensor), name
    assert results["test"] is not None and 0.0 <= results["test"]["label_accuracy"] <= 1.0


def test_a_frozen_run_encodes_every_sentence_once(tiny_data, tiny_weights, tmp_path, monkeypatch):
    # The cache serves every epoch and the temperature fit on dev; one pass over test gives its scores and its
    # calibration errors. So the encoder sees train + dev + test exactly once, however many epochs run.
    from minimtl.bert import Bert
    from minimtl.machinery.data import load_data
    seen, forward = [], Bert.forward
    monkeypatch.setattr(Bert, "forward", lambda self, ids, *a, **k: seen.append(len(ids)) or forward(self, ids, *a, **k))
    results, _ = run(tiny_data, tiny_weights, tmp_path / "out", freeze=["backbone"], epochs=2)
    splits = load_data(tiny_data)
    assert sum(seen) == len(splits.train) + len(splits.dev) + len(splits.test)
    assert results["calibration"]["temperature"] and results["calibration"]["test"]


def test_freeze_layers_moves_only_the_top_layer_and_heads(tiny_data, tiny_weights, tmp_path):
    run(tiny_data, tiny_weights, tmp_path / "out", freeze_layers=1, epochs=1)
    saved, before = load_file(tmp_path / "out" / "model.safetensors"), initial_tensors(tiny_weights)
    for name, tensor in before.items():
        frozen = name.startswith(("bert.embeddings.", "bert.encoder.layer.0."))
        assert torch.equal(saved[name], tensor) == frozen, name


def test_freeze_heads_keeps_them_fixed_while_the_backbone_learns(tiny_data, tiny_weights, tmp_path):
    run(tiny_data, tiny_weights, tmp_path / "a", freeze=["cls-head", "ner-head"], epochs=1, seed=3)
    # the heads of a fine-tuning run, on a frozen backbone (not the frozen recipe's scalar mix and BiLSTM)
    run(tiny_data, tiny_weights, tmp_path / "b", freeze=["backbone"], epochs=1, seed=3, layers=1, sentence_head="linear",
        token_head="linear")
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    # Same seed, so both start from the same heads; (a) never moved them, (b) did.
    for name, tensor in initial_heads(tiny_weights, tmp_path / "a", seed=3).items():
        assert torch.equal(a[name], tensor) and not torch.equal(b[name], tensor), name
    before = initial_tensors(tiny_weights)
    assert not torch.equal(a["bert.encoder.layer.1.output.dense.weight"],
                           before["bert.encoder.layer.1.output.dense.weight"])


def test_unfreeze_schedule_thaws_layers_into_the_optimizer(tiny_data, tiny_weights, tmp_path):
    _, lines = run(tiny_data, tiny_weights, tmp_path / "out", unfreeze_schedule="0,1,all", epochs=3,
                   patience=0)
    assert "epoch 2: thawed layer.1" in lines
    assert "epoch 3: thawed embeddings, layer.0" in lines
    assert sum(line.startswith("feature cache:") for line in lines) == 1  # only while all was frozen


def test_same_seed_same_metrics(tiny_data, tiny_weights, tmp_path):
    first, _ = run(tiny_data, tiny_weights, tmp_path / "a", seed=7)
    second, _ = run(tiny_data, tiny_weights, tmp_path / "b", seed=7)
    assert first == second
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_run_writes_checkpoint_logs_and_results(tiny_data, tiny_weights, tmp_path):
    results, lines = run(tiny_data, tiny_weights, tmp_path / "out", grad_accum=2)
    out = tmp_path / "out"
    assert {"model.safetensors", "config.json", "vocab.txt", "metrics.jsonl", "results.json"} <= \
        {p.name for p in out.iterdir()}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert {"loss", "dev", "sentences_per_second", "padding"} <= set(records[0])
    meta = json.loads((out / "config.json").read_text())["minimtl"]
    assert meta["labels"] and meta["tags"][0] == "O" and meta["train_args"]["grad_accum"] == 2
    assert json.loads((out / "results.json").read_text()) == results
    assert any(line.startswith("test (best epoch") for line in lines)


def test_freeze_all_only_evaluates(tiny_data, tiny_weights, tmp_path):
    results, lines = run(tiny_data, tiny_weights, tmp_path / "out", freeze=["all"])
    assert any("--freeze all: nothing can learn" in line for line in lines)
    assert not (tmp_path / "out").exists()
    assert "label_accuracy" in results["dev"]


@pytest.mark.parametrize("overrides, message", [
    ({"epochs": 0}, "--epochs must be positive"),
    ({"lr_heads": -1.0}, "--lr-heads must be positive"),
    ({"batch_size": 0}, "--batch-size must be positive"),
    ({"w_cls": 0.0, "w_ner": 0.0}, "both 0"),
    ({"unfreeze_schedule": "gradual", "freeze": ["backbone"]}, "combine it only with"),
    ({"freeze_layers": 9}, "--freeze-layers 9: the encoder has 2 layers"),
])
def test_bad_settings_fail_before_anything_is_written(tiny_data, tiny_weights, tmp_path, overrides, message):
    with pytest.raises(UserError, match=message):
        run(tiny_data, tiny_weights, tmp_path / "out", **overrides)
    assert not (tmp_path / "out").exists()


def test_learning_rate_warms_up_then_decays_to_zero():
    factors = [lr_factor(step, total=10, warmup_steps=2) for step in range(10)]
    assert factors[:2] == [0.5, 1.0] and factors[1:] == sorted(factors[1:], reverse=True)
    assert factors[-1] == pytest.approx(0.125)


def test_lora_trains_adapters_only_and_saves_merged_weights(tiny_data, tiny_weights, tmp_path):
    _, lines = run(tiny_data, tiny_weights, tmp_path / "out", lora=4, lora_targets=["query", "value"], epochs=1,
                   lr_lora=1e-2, keep_resume=True)
    table = next(line for line in lines if line.startswith("group"))
    row = next(line.split() for line in table.splitlines() if line.startswith("adapters"))
    assert row[2] == f"{2 * 2 * 4 * (32 + 32):,}"  # layers x targets x r (in + out)
    assert not any(line.startswith("feature cache:") for line in lines)  # the encoder is not constant
    out, before = tmp_path / "out", initial_tensors(tiny_weights)
    # The resume state holds exactly what the optimizer trains: adapters and heads, no base weight.
    trained = load_file(out / "resume" / "model.safetensors").keys()
    assert trained and all(".lora_" in k or k.startswith(("cls_head.", "ner_head.")) for k in trained)
    merged = load_file(out / "model.safetensors")
    assert merged.keys() >= before.keys() and not any("lora" in k or ".base." in k for k in merged)
    for name, tensor in before.items():
        adapted = name.endswith(("query.weight", "value.weight"))
        assert torch.equal(merged[name], tensor) != adapted, name
    assert load_encoder(out).config.hidden_size == 32  # a merged checkpoint is a plain BERT checkpoint


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory, tiny_data, tiny_weights):
    """A finished one-epoch run and its saved tensors: what `--weights RUN` starts from."""
    out = tmp_path_factory.mktemp("earlier") / "run"
    run(tiny_data, tiny_weights, out, epochs=1)
    return out, load_file(out / "model.safetensors")


def started_from(earlier, data, tmp_path, **overrides):
    """The model a run with `--weights earlier` builds before its first step, and its log."""
    cfg = RunConfig(data=[str(data)], weights=str(earlier), out=str(tmp_path / "next"), epochs=1, **overrides)
    lines = []
    model = build(cfg, lines.append)[0]
    return model.state_dict(), next(line for line in lines if line.startswith("--weights"))


def same_as_saved(state, saved, prefix):
    keys = [k for k in state if k.startswith(prefix)]
    return bool(keys) and all(torch.equal(state[k], saved[k]) for k in keys)


def test_weights_that_are_a_run_start_from_its_encoder_and_its_trained_heads(earlier_run, tiny_data, tmp_path):
    # Issue 38: `--weights RUN` silently trained fresh heads on the run's encoder.
    earlier, saved = earlier_run
    state, line = started_from(earlier, tiny_data, tmp_path)
    assert all(same_as_saved(state, saved, prefix) for prefix in ("bert.", "cls_head.", "ner_head."))
    assert line == (f"--weights {earlier} is a minimtl run: this run starts from its encoder and its trained "
                    "cls_head, ner_head (--resume continues a run itself)")


def test_a_head_whose_classes_or_layout_differ_starts_new_and_the_log_says_why(earlier_run, tiny_data, tmp_path):
    earlier, saved = earlier_run
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for split in ("train", "dev", "test"):  # the same sentences and tags, every sentence label renamed
        records = [json.loads(line) for line in (tiny_data / f"{split}.jsonl").read_text().splitlines()]
        (renamed / f"{split}.jsonl").write_text("".join(json.dumps({**r, "label": "new-" + r["label"]}) + "\n"
                                                        for r in records))
    state, line = started_from(earlier, renamed, tmp_path)
    assert same_as_saved(state, saved, "ner_head.") and not same_as_saved(state, saved, "cls_head.")
    assert line.startswith(f"--weights {earlier} is a minimtl run: this run starts from its encoder and its trained "
                           "ner_head; new: cls_head (the run's labels are [")
    state, line = started_from(earlier, tiny_data, tmp_path, crf=True)
    assert same_as_saved(state, saved, "cls_head.") and not same_as_saved(state, saved, "ner_head.")
    assert line.endswith("its trained cls_head; new: ner_head (built otherwise: --pooling, --layers, "
                         "--sentence-head/--token-head or --crf differ) (--resume continues a run itself)")


@pytest.fixture(scope="module")
def few_positions(tmp_path_factory, tiny_weights):
    """The tiny weights with a position table of 64 rows: a model that numbers fewer positions than 128."""
    import shutil

    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("few-positions")
    shutil.copytree(tiny_weights, path, dirs_exist_ok=True)
    tensors = load_file(tiny_weights / "model.safetensors")
    [name] = [k for k in tensors if k.endswith("position_embeddings.weight")]
    tensors[name] = tensors[name][:64].contiguous()
    save_file(tensors, path / "model.safetensors")
    config = json.loads((tiny_weights / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 64}))
    return path


def test_max_len_defaults_to_the_models_positions_where_it_has_fewer_than_128(tiny_data, few_positions, tiny_weights,
                                                                              tmp_path):
    from minimtl.machinery.checkpoint import load_checkpoint

    run(tiny_data, few_positions, tmp_path / "short", epochs=1)
    assert load_checkpoint(tmp_path / "short")[1]["max_len"] == 64
    run(tiny_data, tiny_weights, tmp_path / "long", epochs=1)  # 512 positions: the default is 128
    assert load_checkpoint(tmp_path / "long")[1]["max_len"] == 128
    with pytest.raises(UserError, match=f"--max-len 100: the model in {few_positions} has only 64 positions"):
        run(tiny_data, few_positions, tmp_path / "refused", epochs=1, max_len=100)
    assert not (tmp_path / "refused").exists()
