"""LoRA: a no-op at init, only adapters and heads learn, merging is exact, the parameter count is r * (in + out)."""

import copy
from types import SimpleNamespace

import pytest
import torch

from minimtl import BertConfig, Bert, UserError
from minimtl.freezing import frozen_units, set_frozen
from minimtl.model import IGNORE_INDEX
from minimtl.extensions.lora import (DEFAULT_TARGETS, TARGETS, LoRALinear, adapter_state_dict, add_lora, lora_parameters,
                          merged_state_dict)
from minimtl.model import multitask_loss
from minimtl.machinery.assemble import HeadConfig, build_model
from batches import batch_of

CFG = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=32)
HEADS = HeadConfig(n_labels=3, n_tags=5)
TAGS = ["O", "B-A", "I-A", "B-B", "I-B"]
RANK = 4


def new_model():
    return build_model(Bert(CFG), HEADS, TAGS)


def batch(seed, B=4, T=12):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, CFG.vocab_size, (B, T), generator=g)
    attention_mask = torch.ones(B, T, dtype=torch.long)
    attention_mask[1, 7:] = 0  # some padding, so the masked attention path runs too
    labels = torch.randint(0, HEADS.n_labels, (B,), generator=g)
    tags = torch.randint(0, HEADS.n_tags, (B, T), generator=g).masked_fill(attention_mask == 0, IGNORE_INDEX)
    return input_ids, attention_mask, labels, tags


def run(model, input_ids, attention_mask):
    hidden = model.bert(input_ids, attention_mask)
    out = model.heads(hidden, batch_of(input_ids, attention_mask))
    return hidden, out.cls_logits, out.ner_logits


@pytest.fixture(scope="module")
def trained():
    """A model with adapters on all six targets after a few AdamW steps, and its tensors before training."""
    torch.manual_seed(0)
    model = new_model()
    add_lora(model.bert, RANK, alpha=8, dropout=0.1, targets=tuple(TARGETS))
    set_frozen(model, frozen_units(model, ["none"]))  # with adapters in the model: the whole backbone
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # No weight decay, so a tensor that moved was moved by its gradient.
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    model.train()
    for step in range(3):  # B gets its first gradient at step 1, A (whose gradient is proportional to B) at 2
        input_ids, attention_mask, labels, tags = batch(step)
        loss, _ = multitask_loss(model, model(batch_of(input_ids, attention_mask)),
                                SimpleNamespace(labels=labels, tags=tags, words=None))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), before


def test_a_freshly_wrapped_model_computes_exactly_the_base_model():
    torch.manual_seed(0)
    base = new_model().eval()
    wrapped = copy.deepcopy(base)
    add_lora(wrapped.bert, RANK, alpha=16, dropout=0.1, targets=tuple(TARGETS))
    wrapped.eval()
    with torch.no_grad():
        for a, b in zip(run(base, *batch(0)[:2]), run(wrapped, *batch(0)[:2])):
            assert torch.equal(a, b)


def test_training_moves_only_adapters_and_heads(trained):
    model, before = trained
    after = model.state_dict()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    lora = {name for name in after if name.endswith((".lora_A", ".lora_B"))}
    heads = {name for name in after if name.startswith(("cls_head.", "ner_head."))}
    assert len(lora) == 2 * len(TARGETS) * CFG.num_hidden_layers
    assert trainable == lora | heads
    for name in after:
        if name in trainable:
            assert not torch.equal(after[name], before[name]), f"{name} did not learn"
        else:
            assert torch.equal(after[name], before[name]), f"frozen {name} changed"


def test_layers_with_adapters_stay_in_train_mode():
    # MultiTaskModel.train() puts units without trainable parameters in eval mode; adapters keep a layer training.
    model = new_model()
    add_lora(model.bert, RANK, alpha=8, dropout=0.1)
    set_frozen(model, frozen_units(model, ["none"]))
    model.train()
    assert not model.bert.embeddings.training
    assert all(layer.training for layer in model.bert.layers)
    assert all(m.dropout.training for m in model.modules() if isinstance(m, LoRALinear))


def test_merged_weights_compute_what_the_adapters_do(trained):
    model, _ = trained
    assert all(m.lora_B.abs().max() > 0 for m in model.modules() if isinstance(m, LoRALinear))
    merged = merged_state_dict(model)
    plain = new_model()
    assert list(merged) == list(plain.state_dict())  # the un-wrapped model's keys, in its order
    plain.load_state_dict(merged)
    plain.eval()
    q = model.bert.layers[0].attention["self"].query
    assert torch.equal(merged["bert.encoder.layer.0.attention.self.query.weight"], q.base.weight + q.delta_weight())
    with torch.no_grad():
        for a, b in zip(run(model, *batch(7)[:2]), run(plain, *batch(7)[:2])):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_adapter_state_dict_holds_exactly_the_adapters(trained):
    model, _ = trained
    adapters = adapter_state_dict(model)
    params = dict(model.named_parameters())
    assert set(adapters) == {name for name in params if ".lora_" in name}
    assert all(torch.equal(tensor, params[name]) for name, tensor in adapters.items())
    assert {id(p) for p in lora_parameters(model)} == {id(params[name]) for name in adapters}


def expected_trainable(cfg, heads, rank, targets):
    H, I = cfg.hidden_size, cfg.intermediate_size
    shape = {"query": (H, H), "key": (H, H), "value": (H, H), "attention-output": (H, H),
             "intermediate": (H, I), "output": (I, H)}  # (in, out)
    adapters = cfg.num_hidden_layers * sum(rank * (shape[t][0] + shape[t][1]) for t in targets)
    return adapters + (H + 1) * heads.n_labels + (H + 1) * heads.n_tags


@pytest.mark.parametrize("targets", [DEFAULT_TARGETS, tuple(TARGETS)])
def test_trainable_parameter_count_is_r_times_in_plus_out(targets):
    model = new_model()
    wrapped = add_lora(model.bert, RANK, alpha=8, dropout=0.0, targets=targets)
    set_frozen(model, frozen_units(model, ["none"]))
    assert len(wrapped) == CFG.num_hidden_layers * len(targets)
    assert all(m.delta_weight().shape == m.base.weight.shape for m in wrapped)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n_trainable == expected_trainable(CFG, HEADS, RANK, targets)


@pytest.mark.parametrize("rank, targets, message", [
    (0, DEFAULT_TARGETS, "LoRA rank must be a positive integer, not 0"),
    (-2, DEFAULT_TARGETS, "not -2"),
    (2.5, DEFAULT_TARGETS, "not 2.5"),
    (4, ("query", "queries"), "unknown LoRA target 'queries': choose from query, key, value"),
])
def test_bad_settings_are_one_line_user_errors(rank, targets, message):
    model = new_model()
    with pytest.raises(UserError, match=message):
        add_lora(model.bert, rank, alpha=8, dropout=0.0, targets=targets)
    assert all(p.requires_grad for p in model.parameters())  # rejected before anything was frozen or wrapped
