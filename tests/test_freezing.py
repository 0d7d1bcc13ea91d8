"""Freezing is real: which units each mode freezes, eval mode, optimizer groups and their learning rates, the
unfreeze schedule."""

import pytest
import torch

from minimtl import BertConfig, Bert, UserError
from minimtl.machinery.settings import RunConfig, recipe
from minimtl.machinery.report import parameter_table
from minimtl.freezing import (UnfreezeSchedule, frozen_units, parameter_groups, set_frozen,
                              units)
from minimtl.machinery.assemble import HeadConfig, build_model

LAYERS = {"layer.0", "layer.1", "layer.2"}
LRS = {"backbone": 1e-5, "heads": 1e-3, "adapters": 1e-4}


@pytest.fixture
def model():
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32)
    return build_model(Bert(cfg), HeadConfig(n_labels=3, n_tags=5), ["O", "B-A", "I-A", "B-B", "I-B"])


@pytest.mark.parametrize("modes, layers, expected", [
    (["none"], 0, set()),
    (["all"], 0, {"embeddings", *LAYERS, "cls-head", "ner-head"}),
    (["backbone"], 0, {"embeddings", *LAYERS}),
    (["embeddings"], 0, {"embeddings"}),
    (["cls-head"], 0, {"cls-head"}),
    (["ner-head"], 0, {"ner-head"}),
    (["embeddings", "ner-head"], 0, {"embeddings", "ner-head"}),
    (["none"], 2, {"embeddings", "layer.0", "layer.1"}),
    (["cls-head"], 3, {"embeddings", *LAYERS, "cls-head"}),
])
def test_each_freeze_mode_freezes_exactly_its_units(model, modes, layers, expected):
    frozen = frozen_units(model, modes, layers)
    assert frozen == expected
    set_frozen(model, frozen)
    for name, params in units(model).items():
        assert all(p.requires_grad == (name not in expected) for p in params), name


@pytest.mark.parametrize("modes, layers, message", [
    (["everything"], 0, "unknown freeze mode 'everything'"),
    (["none"], 4, "--freeze-layers 4: the encoder has 3 layers"),
    (["none", "backbone"], 0, "cannot be combined"),
])
def test_impossible_freezing_is_a_clear_error(model, modes, layers, message):
    with pytest.raises(UserError, match=message):
        frozen_units(model, modes, layers)


def test_frozen_units_run_in_eval_mode(model):
    set_frozen(model, {"embeddings", "layer.0", "ner-head"})
    model.train()
    assert not model.bert.embeddings.training and not model.bert.layers[0].training
    assert not model.ner_head.training
    assert model.bert.layers[1].training and model.cls_head.training
    model.eval()
    assert not model.bert.layers[1].training


def test_optimizer_groups_hold_only_trainable_parameters_with_the_right_lr_and_decay(model):
    set_frozen(model, {"embeddings", "layer.0"})
    groups = parameter_groups(model, LRS, weight_decay=0.01)
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert in_groups == {id(p) for p in model.parameters() if p.requires_grad}
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"backbone", "backbone (no decay)", "heads", "heads (no decay)"}
    assert by_name["heads"]["lr"] == 1e-3 and by_name["backbone"]["lr"] == 1e-5
    layer = model.bert.layers[1]
    no_decay = {id(p) for p in by_name["backbone (no decay)"]["params"]}
    assert id(layer.output.LayerNorm.weight) in no_decay and id(layer.output.dense.bias) in no_decay
    assert id(layer.output.dense.weight) in {id(p) for p in by_name["backbone"]["params"]}
    assert all(g["weight_decay"] == 0.0 for g in groups if "no decay" in g["name"])


def test_layer_decay_gives_each_backbone_unit_its_own_rate_shrinking_downwards(model):
    groups = {g["name"]: g for g in parameter_groups(model, LRS, weight_decay=0.01, layer_decay=0.5)}
    top = len(LAYERS) - 1
    for depth, unit in enumerate([f"layer.{i}" for i in range(top, -1, -1)] + ["embeddings"]):  # top first
        assert groups[unit]["lr"] == groups[f"{unit} (no decay)"]["lr"] == 1e-5 * 0.5 ** depth
    assert groups[f"layer.{top}"]["lr"] == 1e-5 and groups["heads"]["lr"] == 1e-3  # the heads are not decayed
    assert {id(p) for p in groups["embeddings"]["params"]} == {id(model.bert.embeddings.word_embeddings.weight),
                                                               id(model.bert.embeddings.position_embeddings.weight),
                                                               id(model.bert.embeddings.token_type_embeddings.weight)}
    rows = {line.split()[0]: line.split() for line in parameter_table(model, set(), LRS, layer_decay=0.5).splitlines()}
    assert rows["embeddings"][-2] == f"{1e-5 * 0.5 ** (top + 1):.2e}" and rows[f"layer.{top}"][-2] == "1.00e-05"


def backbone_rates(cfg):
    """(top-layer learning rate, layer-wise decay) of the recipe `cfg` resolves to."""
    resolved = recipe(cfg, BertConfig(num_hidden_layers=3), "cls", 2, 3, torch.device("cpu"))
    return resolved.learning_rates["backbone"], resolved.layer_decay


def test_the_crf_gets_its_own_backbone_rate_defaults_and_flags_win():
    assert backbone_rates(RunConfig()) == (2e-4, 1.0)
    assert backbone_rates(RunConfig(crf=True)) == (3e-4, 0.8)
    given = RunConfig(crf=True, lr_backbone=1e-4, layer_decay=1.0)
    assert backbone_rates(given) == (1e-4, 1.0)


def test_parameter_table_counts_every_parameter(model):
    set_frozen(model, frozen_units(model, ["backbone"]))
    table = parameter_table(model, frozen_units(model, ["backbone"]), LRS).splitlines()
    assert table[0].split() == ["group", "tensors", "parameters", "%", "of", "total", "lr", "frozen?"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["layer.0"][-1] == "yes" and rows["ner-head"][-1] == "no" and rows["ner-head"][-2] == "1.00e-03"
    heads = sum(p.numel() for p in [*model.cls_head.parameters(), *model.ner_head.parameters()])
    assert rows["trainable"][1] == f"{heads:,}"


def test_gradual_schedule_thaws_one_layer_from_the_top_per_epoch():
    schedule = UnfreezeSchedule("gradual", 3)
    backbone = {"embeddings", *LAYERS}
    assert schedule.frozen_backbone(1) == backbone
    assert schedule.frozen_backbone(2) == {"embeddings", "layer.0", "layer.1"}
    assert schedule.frozen_backbone(3) == {"embeddings", "layer.0"}
    assert schedule.frozen_backbone(4) == {"embeddings"}
    assert schedule.frozen_backbone(5) == schedule.frozen_backbone(50) == set()


def test_explicit_schedule_and_its_errors():
    schedule = UnfreezeSchedule("0, 2, all", 3)
    assert [len(schedule.frozen_backbone(e)) for e in (1, 2, 3, 4)] == [4, 2, 0, 0]
    with pytest.raises(UserError, match="'4' is not 'all' or a layer count from 0 to 3"):
        UnfreezeSchedule("0,4", 3)
    with pytest.raises(UserError, match="'top' is not"):
        UnfreezeSchedule("top", 3)


def test_lora_adapters_are_their_own_unit_and_group(model):
    from minimtl.extensions.lora import add_lora, lora_parameters

    add_lora(model.bert, rank=2, alpha=4, dropout=0.0)
    named = units(model)
    assert named["adapters"] == lora_parameters(model)
    assert not any(id(p) in {id(q) for q in named["adapters"]} for p in named["layer.0"])
    set_frozen(model, {"embeddings", *LAYERS})
    assert all(p.requires_grad for p in named["adapters"]) and not any(p.requires_grad for p in named["layer.1"])
    groups = {g["name"]: g for g in parameter_groups(model, LRS, weight_decay=0.01)}
    assert groups["adapters"]["lr"] == 1e-4 and len(groups["adapters"]["params"]) == 2 * 2 * 3
    row = next(line.split() for line in parameter_table(model, {"embeddings", *LAYERS}, LRS).splitlines()
               if line.startswith("adapters"))
    assert row[2] == f"{3 * 2 * 2 * (16 + 16):,}" and row[-1] == "no"
