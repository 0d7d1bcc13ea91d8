"""What the heads read and how: layer stacks, the scalar mix, the BiLSTM, the CRF over words, the feature cache.

The frozen-backbone recipe (a scalar mix of every layer, a BiLSTM in each head) must compute the
same thing from the cache as from the encoder, and inference must read the same layers as training did.
"""

import copy
import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from minimtl import Bert, BertConfig, UserError
from minimtl.machinery.settings import RunConfig
from minimtl.evaluation import predict
from minimtl.machinery.sampling import evaluate_sources
from minimtl.batching import batches
from minimtl.machinery.checkpoint import load_checkpoint, load_predictor
from minimtl.extensions.features import FeatureCache, widened
from minimtl.model import IGNORE_INDEX, multitask_loss
from minimtl.machinery.assemble import HeadConfig, build_model
from minimtl.extensions.heads import LSTM_HIDDEN, BiLSTM, ScalarMix
from minimtl.machinery.run import build, train
from minimtl.machinery.settings import trained_pooling
from batches import batch_of

CFG = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                 max_position_embeddings=32)
TAGS = ["O", "B-A", "I-A", "B-B", "I-B"]


def inputs(seed=0, B=3, T=9):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, CFG.vocab_size, (B, T), generator=g)
    attention_mask = torch.ones(B, T, dtype=torch.long)
    attention_mask[1, 6:] = 0
    attention_mask[2, 3:] = 0
    return input_ids, attention_mask


@torch.no_grad()
def test_the_layer_stack_is_every_layers_output_bottom_first():
    torch.manual_seed(0)
    bert = Bert(CFG).eval()
    ids, mask = inputs()
    stack = bert(ids, mask, layers=CFG.num_hidden_layers + 1)  # (B, T, 4, H)
    assert stack.shape == (3, 9, 4, 16)
    assert torch.equal(stack[:, :, -1], bert(ids, mask))
    for j in range(1, CFG.num_hidden_layers + 1):  # layer j's output = an encoder cut after j layers
        cut = copy.deepcopy(bert)
        cut.encoder["layer"] = cut.encoder["layer"][:j]
        torch.testing.assert_close(stack[:, :, j], cut(ids, mask), rtol=0, atol=1e-6)
    torch.testing.assert_close(bert(ids, mask, layers=2), stack[:, :, -2:], rtol=0, atol=0)


@pytest.mark.parametrize("j", range(4))
def test_a_one_hot_scalar_mix_reads_exactly_that_layer(j):
    states = torch.randn(2, 5, 4, 8)
    mix = ScalarMix(4)
    with torch.no_grad():
        mix.weights.copy_(torch.full((4,), float("-inf")).index_fill(0, torch.tensor(j), 0.0))
    assert torch.equal(mix(states), states[:, :, j])


def test_the_mix_starts_as_the_plain_mean_of_the_layers():
    states = torch.randn(2, 5, 4, 8)
    torch.testing.assert_close(ScalarMix(4)(states), states.mean(2))


def test_the_mix_of_the_caches_layout_is_the_mix_of_the_encoders():
    """The cache widens its half-precision rows into one layer after another (features.widened); the mix must
    read that view exactly as it reads the encoder's (B, T, k, H) stack, and so must its gradient."""
    half = torch.randn(2, 5, 4, 8).half()
    mix = ScalarMix(4)
    with torch.no_grad():
        mix.weights.copy_(torch.randn(4))
    cached, direct = widened(half), half.float()
    assert torch.equal(cached, direct) and not cached.is_contiguous()
    torch.testing.assert_close(mix(cached), mix(direct), rtol=0, atol=1e-6)
    grads = []
    for states in (cached, direct):
        mix.zero_grad()
        mix(states).square().sum().backward()
        grads.append(mix.weights.grad.clone())
    torch.testing.assert_close(*grads, rtol=1e-6, atol=1e-6)


def model_with(**heads):
    torch.manual_seed(0)
    return build_model(Bert(CFG), HeadConfig(n_labels=3, n_tags=len(TAGS), **heads), TAGS)


@pytest.mark.parametrize("kind", ["conv", "lstm"])
def test_the_contextual_layers_never_read_padding(kind):
    model = model_with(layers=2, sentence_head=kind, token_head=kind).eval()
    ids, mask = inputs()
    out = model(batch_of(ids, mask))
    alone = model(batch_of(ids[2:, :3], mask[2:, :3]))  # sentence 2 without its padding: sums in another order
    torch.testing.assert_close(out.ner_logits[2:, :3], alone.ner_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.cls_logits[2:], alone.cls_logits, rtol=0, atol=1e-5)
    # Whatever the padding positions hold (a cache's padding row, say), the real ones read the same.
    hidden = model.features(batch_of(ids, mask))
    noisy = hidden.masked_fill(~mask.bool()[..., None, None], 1e3)
    garbage = model.heads(noisy, batch_of(ids, mask))
    real = mask.bool()
    torch.testing.assert_close(garbage.ner_logits[real], out.ner_logits[real], rtol=0, atol=1e-5)
    torch.testing.assert_close(garbage.cls_logits, out.cls_logits, rtol=0, atol=1e-5)


def test_the_two_one_way_lstms_are_pytorchs_packed_bidirectional_lstm():
    torch.manual_seed(0)
    ours = BiLSTM(8)
    theirs = nn.LSTM(8, LSTM_HIDDEN, batch_first=True, bidirectional=True)
    with torch.no_grad():  # the same weights: PyTorch's reverse direction is our right_to_left
        for name, p in theirs.named_parameters():
            lstm = ours.right_to_left if name.endswith("_reverse") else ours.left_to_right
            p.copy_(getattr(lstm, name.removesuffix("_reverse")))
    x = torch.randn(3, 6, 8)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] + [0] * 5])
    packed = pack_padded_sequence(x, mask.sum(1), batch_first=True, enforce_sorted=False)
    expected = pad_packed_sequence(theirs(packed)[0], batch_first=True, total_length=6)[0]
    torch.testing.assert_close(ours(x, mask), expected, rtol=0, atol=1e-5)
    assert ours(x, mask)[mask == 0].eq(0).all()  # padding positions are zero, as pad_packed_sequence gives


def test_a_dilated_convolution_state_sees_29_positions_and_no_more():
    """Dilations 1, 2, 4 see 1 + 2 * (1 + 2 + 4) = 15 positions; the block applied twice, 1 + 2 * 14 = 29."""
    from minimtl.extensions.heads import DilatedConvs
    torch.manual_seed(0)
    convs = DilatedConvs(8).eval()
    x, mask = torch.randn(1, 40, 8), torch.ones(1, 40, dtype=torch.long)
    base = convs(x, mask)[0, 20]
    for position in range(40):
        changed = x.clone()
        changed[0, position] += 1.0
        moved = not torch.equal(convs(changed, mask)[0, 20], base)
        assert moved == (abs(position - 20) <= 14), position


def test_the_lstm_sentence_head_pools_the_mean_and_the_max_of_its_states():
    model = model_with(sentence_head="lstm").eval()
    head = model.cls_head
    ids, mask = inputs()
    with torch.no_grad():
        states = head.neck(model.features(batch_of(ids[2:, :3], mask[2:, :3])), mask[2:, :3])  # sentence 2 alone: no padding
        by_hand = head.out(torch.cat([states.mean(1), states.max(1).values], -1))
        torch.testing.assert_close(model(batch_of(ids, mask)).cls_logits[2:], by_hand, rtol=0, atol=1e-6)


def word_batch(ids, mask):
    """Tags on "first sub-tokens" 1, 2, 4 (position 3 is a continuation) of every sentence that has them."""
    words = torch.tensor([[1, 2, 4], [1, 2, 4], [1, -1, -1]])
    tags = torch.full(ids.shape, IGNORE_INDEX)
    gold = torch.tensor([[1, 2, 0], [3, 0, 1], [0, 0, 0]])
    for b in range(3):
        for w, position in enumerate(words[b].tolist()):
            if position >= 0:
                tags[b, position] = gold[b, w]
    return SimpleNamespace(labels=None, tags=tags, words=words), gold


def test_the_crf_loss_runs_over_words_only():
    model = model_with(crf=True)
    ids, mask = inputs()
    batch, gold = word_batch(ids, mask)
    logits = model(batch_of(ids, mask)).ner_logits
    loss, parts = multitask_loss(model, SimpleNamespace(cls_logits=None, ner_logits=logits), batch)
    by_hand = model.ner_head.crf.nll(logits[:, [1, 2, 4]], gold, batch.words >= 0)
    torch.testing.assert_close(loss, by_hand)
    # [CLS], continuation sub-tokens, [SEP] and padding never enter the chain: changing them changes nothing.
    noisy = logits.clone()
    noisy[:, [0, 3, 5, 6, 7, 8]] += 100 * torch.randn(3, 6, len(TAGS))
    noisy[2, 2] -= 100
    again, _ = multitask_loss(model, SimpleNamespace(cls_logits=None, ner_logits=noisy), batch)
    torch.testing.assert_close(again, loss)
    loss.backward()
    assert model.ner_head.crf.transitions.grad.abs().sum() > 0


def test_trained_pooling_follows_the_sentence_transformers_config(tmp_path):
    assert trained_pooling(tmp_path) == "cls"  # plain BERT: [CLS]
    (tmp_path / "1_Pooling").mkdir()
    config = tmp_path / "1_Pooling" / "config.json"
    config.write_text(json.dumps({"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}))
    assert trained_pooling(tmp_path) == "mean"
    config.write_text("[1, 2")
    with pytest.raises(UserError, match="1_Pooling/config.json"):
        trained_pooling(tmp_path)


def test_the_default_weights_were_trained_mean_pooled(checkpoint_dir):
    assert trained_pooling(checkpoint_dir) == "mean"


def frozen_config(tiny_data, tiny_weights, out, **overrides):
    settings = dict(epochs=2, batch_size=8, freeze=["backbone"], patience=0) | overrides
    return RunConfig(data=[str(tiny_data)], weights=str(tiny_weights), out=str(out), **settings)


def test_the_frozen_recipe_mixes_every_layer_with_a_bilstm_per_head(tiny_data, tiny_weights, tmp_path):
    model, _, _, _ = build(frozen_config(tiny_data, tiny_weights, tmp_path / "out"), log=lambda _: None)
    heads = model.config
    assert heads.layers == 3 and heads.sentence_head == heads.token_head == "lstm"  # embeddings + 2 layers
    model, _, _, _ = build(RunConfig(data=[str(tiny_data)], weights=str(tiny_weights)), log=lambda _: None)
    heads = model.config
    assert heads.layers == 1 and heads.sentence_head == heads.token_head == "linear"
    with pytest.raises(UserError, match="--layers 4: the encoder has 3 hidden states"):
        build(frozen_config(tiny_data, tiny_weights, tmp_path / "out", layers=4), log=lambda _: None)
    with pytest.raises(UserError, match="--pooling cls is how the linear sentence head reads"):
        build(frozen_config(tiny_data, tiny_weights, tmp_path / "out", pooling="cls"), log=lambda _: None)
    model, _, _, _ = build(frozen_config(tiny_data, tiny_weights, tmp_path / "out", pooling="cls",
                                      sentence_head="linear"), log=lambda _: None)
    assert model.config.pooling == "cls"


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.float16, 2e-3)])
def test_the_cache_holds_what_the_encoder_computes(tiny_data, tiny_weights, tmp_path, dtype, atol):
    model, sources, _, _ = build(frozen_config(tiny_data, tiny_weights, tmp_path / "out"), log=lambda _: None)
    model.eval()
    lines = []
    cache = FeatureCache(model, sources, ("train", "dev"), lines.append, dtype=dtype)
    assert "the top 3 layers" in lines[0] and str(dtype).removeprefix("torch.") in lines[0]
    source = sources[0]
    for split in ("train", "dev"):
        for batch in batches(source.ids[split], 8, rng=__import__("random").Random(0)):
            cached = cache.hidden(source.name, split, batch)
            with torch.no_grad():
                direct = model.features(batch_of(batch.input_ids, batch.attention_mask))
            assert cached.shape == direct.shape and cached.dtype == torch.float32
            scale = 1 if dtype == torch.float32 else direct.abs().max().item()
            torch.testing.assert_close(cached, direct, rtol=0, atol=atol * scale)


def test_a_frozen_run_predicts_at_inference_as_it_scored_in_training(tiny_data, tiny_weights, tmp_path):
    out = tmp_path / "out"
    results = train(frozen_config(tiny_data, tiny_weights, out), log=lambda _: None)
    model, meta = load_checkpoint(out)
    assert meta["heads"]["layers"] == 3 and meta["heads"]["token_head"] == "lstm"
    _, sources, _, _ = build(frozen_config(tiny_data, tiny_weights, tmp_path / "unused"), log=lambda _: None)
    assert evaluate_sources(model, sources, "test") == results["test"]
    labels, tags = predict(model, sources[0], "test")
    texts = [" ".join(ex.words) for ex in sources[0].splits.test]
    predictions = load_predictor(out).predictions(texts)
    assert [p.label for p in predictions] == labels
    # Raw text is split as BERT splits it ("U.S." may become three words); where the words agree, so do the tags.
    same_words = [i for i, (p, ex) in enumerate(zip(predictions, sources[0].splits.test))
                  if [w.text for w in p.words] == list(ex.words)]
    assert len(same_words) >= len(texts) // 2
    assert [predictions[i].tags for i in same_words] == [tags[i] for i in same_words]


def loads_as_before(out, version, old_name):
    """Write the run in `out` back as format `version` named its tensors (`old_name`), and load it: the same
    weights, tensor for tensor."""
    model, _ = load_checkpoint(out)
    old = {old_name(name): t for name, t in load_file(out / "model.safetensors").items()}
    save_file(old, out / "model.safetensors")
    config = json.loads((out / "config.json").read_text())
    config["minimtl"]["format_version"] = version
    (out / "config.json").write_text(json.dumps(config))
    loaded, _ = load_checkpoint(out)
    assert all(torch.equal(loaded.state_dict()[name], value) for name, value in model.state_dict().items())
    return old


def test_a_format_4_checkpoint_with_one_bidirectional_lstm_still_loads(tiny_data, tiny_weights, tmp_path):
    out = tmp_path / "out"
    train(frozen_config(tiny_data, tiny_weights, out, epochs=1), log=lambda _: None)
    # As format 4 wrote it: each BiLSTM as one nn.LSTM(bidirectional=True).
    old = loads_as_before(out, 4, lambda name: name.replace(".neck.", ".lstm.").replace(".left_to_right.", ".")
                          .replace(".right_to_left.", ".") + "_reverse" * (".right_to_left." in name))
    assert "ner_head.lstm.weight_hh_l0_reverse" in old and "ner_head.lstm.weight_hh_l0" in old


def test_a_format_5_checkpoint_with_its_bilstm_and_shape_table_under_their_old_names_still_loads(
        tiny_data, tiny_weights, tmp_path):
    out = tmp_path / "out"
    train(frozen_config(tiny_data, tiny_weights, out, epochs=1, word_shape=True), log=lambda _: None)
    # As format 5 named them: each head's BiLSTM `.lstm.`, the heads' shape table `head_shapes`.
    old = loads_as_before(out, 5, lambda name: name.replace(".neck.", ".lstm.").replace("head_input.", "head_shapes."))
    assert "ner_head.lstm.left_to_right.weight_hh_l0" in old and "head_shapes.weight" in old


def test_a_crf_checkpoint_predicts_as_the_trained_model_did(tiny_data, tiny_weights, tmp_path):
    out = tmp_path / "out"
    cfg = RunConfig(data=[str(tiny_data)], weights=str(tiny_weights), out=str(out), epochs=2, batch_size=8,
                      lr_backbone=1e-3, crf=True, patience=0)
    lines = []
    results = train(cfg, log=lines.append)
    assert any("\n  .crf " in line for line in lines)  # the parameter table shows the transitions
    model, meta = load_checkpoint(out)
    assert meta["heads"]["crf"] and model.ner_head.crf.transitions.abs().sum() > 0
    _, sources, _, _ = build(cfg, log=lambda _: None)
    assert evaluate_sources(model, sources, "dev") == results["dev"]  # scored in memory, at the best epoch
    texts = [" ".join(ex.words) for ex in sources[0].splits.test]
    _, tags = predict(model, sources[0], "test")
    predictions = load_predictor(out).predictions(texts)
    same_words = [i for i, (p, ex) in enumerate(zip(predictions, sources[0].splits.test))
                  if [w.text for w in p.words] == list(ex.words)]
    assert len(same_words) >= len(texts) // 2
    assert [predictions[i].tags for i in same_words] == [tags[i] for i in same_words]


def test_a_crf_trains_with_lora_adapters(tiny_data, tiny_weights, tmp_path):
    cfg = RunConfig(data=[str(tiny_data)], weights=str(tiny_weights), out=str(tmp_path / "out"), epochs=1,
                      batch_size=8, lora=2, crf=True)
    train(cfg, log=lambda _: None)
    model, meta = load_checkpoint(tmp_path / "out")
    assert meta["heads"]["crf"] and model.ner_head.crf.transitions.abs().sum() > 0  # they start at zero
