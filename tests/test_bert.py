"""The hand-written encoder is the same function as transformers.BertModel (the test-only oracle)."""

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

import minimtl
from minimtl import UserError, load_encoder
from minimtl.extensions import families

transformers = pytest.importorskip("transformers")

SENTENCES = [
    "Alice went to Paris last summer.",
    "President Biden visited Wall Street on Monday.",
    "ok",
    "Tesla's CEO Elon Musk unveiled the Cybertruck at the event, and the crowd went wild for several minutes.",
]
TOL = 1e-5


def batch(tokenizer, sentences):
    encoded = tokenizer.encode_batch(sentences)
    T = max(len(e.ids) for e in encoded)
    ids = torch.tensor([e.ids + [0] * (T - len(e.ids)) for e in encoded])
    mask = torch.tensor([[1] * len(e.ids) + [0] * (T - len(e.ids)) for e in encoded])
    return ids, mask


def max_diff_on_real_tokens(ours, theirs, mask):
    real = mask.bool()
    return (ours[real] - theirs[real]).abs().max().item()


def reference(path):
    return transformers.BertModel.from_pretrained(path, add_pooling_layer=False).eval()


@pytest.fixture(scope="module")
def tokenizer(checkpoint_dir):
    tok = Tokenizer.from_file(str(checkpoint_dir / "tokenizer.json"))
    tok.no_padding()  # the file pads everything to 128; the tests pad themselves
    return tok


@torch.no_grad()
def test_parity_with_transformers_on_default_weights(checkpoint_dir, tokenizer):
    ids, mask = batch(tokenizer, SENTENCES)
    assert not mask.all(), "the batch must contain padding"
    ours = load_encoder(checkpoint_dir)(ids, mask)
    theirs = reference(checkpoint_dir)(input_ids=ids, attention_mask=mask).last_hidden_state
    assert ours.shape == theirs.shape == (len(SENTENCES), ids.shape[1], 384)
    assert max_diff_on_real_tokens(ours, theirs, mask) <= TOL


@torch.no_grad()
def test_a_sentence_alone_equals_its_row_in_a_padded_batch(checkpoint_dir, tokenizer):
    """Packing the real tokens (bert.TokenLayout) is invisible: batching never changes a sentence's states."""
    encoder = load_encoder(checkpoint_dir).eval()
    ids, mask = batch(tokenizer, SENTENCES)
    together = encoder(ids, mask)
    for row, n in enumerate(mask.sum(1).tolist()):
        alone = encoder(ids[row:row + 1, :n])  # no mask, no padding: the plain (B, T) path
        assert (alone[0] - together[row, :n]).abs().max().item() <= TOL
        assert not together[row, n:].any(), "padding positions come out as zeros"


@pytest.fixture(scope="module")
def small_random_bert(tmp_path_factory):
    """A randomly initialised BERT of another shape, saved by transformers itself."""
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=300, hidden_size=128, num_hidden_layers=3, num_attention_heads=4,
                                  intermediate_size=512, max_position_embeddings=64)
    model = transformers.BertForMaskedLM(cfg).eval()  # MLM head present: its tensors must be ignored
    path = tmp_path_factory.mktemp("small")
    model.save_pretrained(path)
    return path, model.bert


def random_batch(vocab=300):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab, (5, 37), generator=g)
    lengths = torch.tensor([37, 30, 12, 2, 25])
    mask = (torch.arange(37)[None, :] < lengths[:, None]).long()
    return ids * mask, mask


@torch.no_grad()
def test_parity_on_a_random_bert_of_another_shape(small_random_bert):
    path, reference_model = small_random_bert
    ids, mask = random_batch()
    ours = load_encoder(path)
    assert len(ours.layers) == 3 and ours.config.hidden_size == 128
    diff = max_diff_on_real_tokens(ours(ids, mask), reference_model(input_ids=ids, attention_mask=mask)
                                   .last_hidden_state, mask)
    assert diff <= TOL


def resave(src, dst, rename):
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    tensors = load_file(src / "model.safetensors")
    save_file({rename(k): v.contiguous() for k, v in tensors.items()}, dst / "model.safetensors")
    return dst


def legacy_name(name):
    name = re.sub(r"LayerNorm\.weight$", "LayerNorm.gamma", name)
    name = re.sub(r"LayerNorm\.bias$", "LayerNorm.beta", name)
    return name if name.startswith(("bert.", "cls.")) else "bert." + name


@torch.no_grad()
def test_parity_under_legacy_names(small_random_bert, tmp_path, capsys):
    path, reference_model = small_random_bert
    legacy = resave(path, tmp_path / "legacy", legacy_name)
    names = load_file(legacy / "model.safetensors").keys()
    assert any(n.endswith("LayerNorm.gamma") for n in names) and all(n.startswith(("bert.", "cls.")) for n in names)
    ids, mask = random_batch()
    ours = load_encoder(legacy, verbose=True)
    assert "ignored" in capsys.readouterr().out  # the MLM head tensors are named, not silently dropped
    diff = max_diff_on_real_tokens(ours(ids, mask), reference_model(input_ids=ids, attention_mask=mask)
                                   .last_hidden_state, mask)
    assert diff <= TOL


def test_missing_tensor_is_a_clear_error(small_random_bert, tmp_path):
    path, _ = small_random_bert
    tensors = load_file(path / "model.safetensors")
    dropped = "bert.encoder.layer.1.attention.self.key.weight"
    assert dropped in tensors
    bad = resave(path, tmp_path / "bad", lambda k: k)
    save_file({k: v for k, v in tensors.items() if k != dropped}, bad / "model.safetensors")
    with pytest.raises(UserError, match=r"missing tensors: encoder\.layer\.1\.attention\.self\.key\.weight"):
        load_encoder(bad)


def test_wrong_shape_is_a_clear_error(small_random_bert, tmp_path):
    path, _ = small_random_bert
    bad = resave(path, tmp_path / "bad", lambda k: k)
    config = json.loads((bad / "config.json").read_text())
    config["intermediate_size"] = 256
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"encoder\.layer\.0\.intermediate\.dense\.weight \(512, 128\) "
                                        r"\(expected \(256, 128\)\)"):
        load_encoder(bad)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"hidden_size": "big"}', "field 'hidden_size' should be int"),
    ('{"hidden_size": 100, "num_attention_heads": 12}', "not a multiple"),
])
def test_malformed_config_is_a_clear_error(small_random_bert, tmp_path, content, message):
    # Read as every run reads a user's checkpoint: by its family's reader, which checks every value.
    path, _ = small_random_bert
    bad = resave(path, tmp_path / "bad", lambda k: k)
    (bad / "config.json").write_text(content)
    with pytest.raises(UserError, match=message) as err:
        families.load_encoder(bad)
    assert "config.json" in str(err.value) and "\n" not in str(err.value)


def test_damaged_weights_file_is_a_clear_error(small_random_bert, tmp_path):
    path, _ = small_random_bert
    bad = resave(path, tmp_path / "bad", lambda k: k)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="model.safetensors: not a readable safetensors file"):
        load_encoder(bad)
    with pytest.raises(UserError, match="checkpoint directory not found"):
        load_encoder(tmp_path / "nowhere")


@torch.no_grad()
def test_padding_invariance(checkpoint_dir, tokenizer):
    encoder = load_encoder(checkpoint_dir)
    ids, mask = batch(tokenizer, SENTENCES)
    together = encoder(ids, mask)
    for i, sentence in enumerate(SENTENCES):
        alone_ids, alone_mask = batch(tokenizer, [sentence])
        alone = encoder(alone_ids, alone_mask)[0]
        n = int(mask[i].sum())
        assert (together[i, :n] - alone).abs().max().item() <= TOL


def test_train_mode_applies_dropout_and_eval_mode_does_not(checkpoint_dir, tokenizer):
    encoder = load_encoder(checkpoint_dir)
    ids, mask = batch(tokenizer, SENTENCES[:1])
    with torch.no_grad():
        assert torch.equal(encoder(ids, mask), encoder(ids, mask))
        encoder.train()
        assert not torch.equal(encoder(ids, mask), encoder(ids, mask))


def test_runtime_code_never_imports_the_oracles():
    root = Path(minimtl.__file__).resolve().parents[1]
    files = list((root / "minimtl").rglob("*.py")) + [root / "train.py", root / "infer.py"]
    pattern = re.compile(r"^\s*(import|from)\s+(transformers|sentence_transformers|seqeval)\b", re.M)
    offenders = [str(f) for f in files if f.exists() and pattern.search(f.read_text(encoding="utf-8"))]
    assert not offenders
