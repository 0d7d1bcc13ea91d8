"""RoBERTa, XLM-R, DistilBERT and ELECTRA checkpoints run through the one hand-written encoder, and compute what
their own `transformers` classes compute (the test-only oracle); a checkpoint that does not fit is one line."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from family_checkpoints import FAMILIES, write_checkpoint, write_checkpoints
from minimtl import UserError
from minimtl.extensions.families import load_encoder
from minimtl.machinery.checkpoint import load_pretrained
from minimtl.extensions.family_tokenizers import load_tokenizer
transformers = pytest.importorskip("transformers")

TOL = 1e-5
SENTENCES = [["Alice", "went", "to", "Paris", "."], ["ok"],
             "Zoë visited Köln , Zürich and 東京 with José 😀 last summer .".split(),
             "The French currency fell to an 11-year low against the dollar on Saturday .".split()]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def checkpoint(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    reference, _ = write_checkpoint(path, request.param)
    return request.param, path, reference


def padded_batch(aligner, sentences):
    """The sentences through the checkpoint's own tokenizer, padded on the right with its padding id."""
    encodings = aligner.encode(sentences)
    T = max(len(e.input_ids) for e in encodings)
    ids = torch.tensor([e.input_ids + [aligner.pad_id] * (T - len(e.input_ids)) for e in encodings])
    mask = torch.tensor([[1] * len(e.input_ids) + [0] * (T - len(e.input_ids)) for e in encodings])
    return ids, mask


@torch.no_grad()
def test_every_family_computes_what_its_transformers_class_computes(checkpoint):
    family, path, reference = checkpoint
    encoder = load_encoder(path)
    ids, mask = padded_batch(load_tokenizer(path, encoder.config.vocab_size), SENTENCES)
    assert not mask.all(), "the batch must contain padding"
    ours = encoder(ids, mask)
    theirs = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    assert ours.shape == theirs.shape
    real = mask.bool()
    assert (ours[real] - theirs[real]).abs().max().item() <= TOL
    assert not ours[~real].any(), "padding positions come out as zeros"


def test_each_family_keeps_its_real_differences(checkpoint):
    family, path, _ = checkpoint
    encoder = load_encoder(path)
    embeddings, config = encoder.embeddings, encoder.config
    assert config.model_type == family.removesuffix("-sinusoidal")
    assert config.position_offset == (2 if family in ("roberta", "xlm-roberta") else 0)  # pad_token_id + 1
    assert config.max_tokens == config.max_position_embeddings - config.position_offset
    assert (embeddings.token_type_embeddings is None) == family.startswith("distilbert")
    assert (getattr(embeddings, "project", None) is not None) == (family == "electra")  # 24 -> 64
    assert getattr(embeddings, "fixed_positions", False) == (family == "distilbert-sinusoidal")


def test_a_sequence_longer_than_the_positions_is_refused(checkpoint):
    _, path, _ = checkpoint
    encoder = load_encoder(path)
    with pytest.raises(ValueError, match=f"longer than the {encoder.config.max_tokens} positions"):
        encoder(torch.full((1, encoder.config.max_tokens + 1), 5))
    encoder(torch.full((1, encoder.config.max_tokens), 5))  # the longest that fits


# --- checkpoints that do not fit ------------------------------------------------------------------------


def copy_checkpoint(src, dst, config=None, rename=None):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    if config is not None:
        (dst / "config.json").write_text(json.dumps({**json.loads((src / "config.json").read_text()), **config}))
    if rename is not None:
        tensors = load_file(src / "model.safetensors")
        save_file({rename(k): v.contiguous() for k, v in tensors.items()}, dst / "model.safetensors")
    return dst


@pytest.fixture(scope="module")
def bert_and_roberta(tmp_path_factory):
    return write_checkpoints(tmp_path_factory, "bert", "roberta")


def test_a_roberta_config_over_bert_tensors_is_one_line_naming_the_file(bert_and_roberta, tmp_path):
    bert, roberta = bert_and_roberta
    mixed = copy_checkpoint(bert, tmp_path / "mixed")
    (mixed / "config.json").write_text((roberta / "config.json").read_text())
    with pytest.raises(UserError) as err:
        load_pretrained(mixed)  # as a run reads --weights: its sizes checked first
    message = str(err.value)
    assert message.startswith(f"{mixed / 'model.safetensors'}: ") and "\n" not in message
    assert "its tensors are named bert.*, but config.json says model_type 'roberta'" in message


@pytest.mark.parametrize("change, message", [
    ({"model_type": "gpt2"}, "model_type 'gpt2' is not supported"),
    ({"model_type": ["bert"]}, "model_type .* is not supported"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type 'relative_key' is not supported"),
    ({"hidden_act": "gelu_new"}, "hidden_act 'gelu_new' is not supported"),
    ({"pad_token_id": 70}, "leaves no position"),
])
def test_an_unsupported_config_is_one_line_naming_config_json(bert_and_roberta, tmp_path, change, message):
    _, roberta = bert_and_roberta
    bad = copy_checkpoint(roberta, tmp_path / "bad", config=change)
    with pytest.raises(UserError, match=message) as err:
        load_encoder(bad)
    assert str(err.value).startswith(f"{bad / 'config.json'}: ") and "\n" not in str(err.value)


@pytest.mark.parametrize("change, message", [
    ({"vocab_size": 10 ** 12}, r"embeddings\.word_embeddings\.weight \(\d+, 48\) \(expected \(1000000000000, 48\)\)"),
    ({"num_hidden_layers": 10 ** 9}, "holds 2 encoder layers, but config.json asks for 1000000000"),
    ({"max_position_embeddings": 10 ** 10}, r"position_embeddings\.weight \(66, 48\)"),
])
def test_an_absurd_size_is_refused_from_the_header_before_anything_is_built(bert_and_roberta, tmp_path,
                                                                           change, message):
    _, roberta = bert_and_roberta
    bad = copy_checkpoint(roberta, tmp_path / "bad", config=change)
    with pytest.raises(UserError, match=message):
        load_pretrained(bad)  # 10^12 x 48 floats would be 192 TB: it must never be allocated


def test_distilbert_names_are_read_and_a_missing_block_tensor_is_named_ours(tmp_path):
    path = tmp_path / "distilbert"
    write_checkpoint(path, "distilbert")
    dropped = "distilbert.transformer.layer.1.ffn.lin1.weight"
    bad = copy_checkpoint(path, tmp_path / "bad", rename=lambda k: k if k != dropped else "unused." + k)
    with pytest.raises(UserError, match=r"missing tensors: encoder\.layer\.1\.intermediate\.dense\.weight"):
        load_encoder(bad)
