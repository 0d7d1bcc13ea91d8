"""A checkpoint's files are checked against each other (issue 37, class 1): a config.json that contradicts the
tensors beside it, numbers that make the maths meaningless, tokenizer files of two kinds, a side file reached
through a symlink, a --weights folder whose weights changed under a run that is resumed. Each is one line
naming the file (and the key, as that file spells it), before anything is trained or written.
"""

import json
import shutil

import pytest
import torch
from family_checkpoints import write_checkpoints, write_tokenizer
from safetensors.torch import load_file, save_file

from minimtl import UserError
from minimtl.bert import Bert, BertConfig
from minimtl.extensions.family_tokenizers import load_tokenizer
from minimtl.machinery.assemble import HeadConfig, build_model
from minimtl.machinery.checkpoint import atomic_directory, load_checkpoint, load_pretrained, write_model
from minimtl.machinery.interrupts import Interrupted
from minimtl.machinery.reading import READ_FILES, check_files
from minimtl.machinery.resume import resume_config
from minimtl.machinery.run import train
from minimtl.machinery.settings import RunConfig

TAGS = ["O", "B-LOC", "I-LOC"]


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    names = ("bert", "roberta", "xlm-roberta", "distilbert", "electra")
    return dict(zip(names, write_checkpoints(tmp_path_factory, *names)))


def edited(source, target, config=None, drop=()):
    """A copy of the checkpoint `source` with `config` merged into its config.json and the keys `drop` removed."""
    shutil.copytree(source, target)
    raw = json.loads((target / "config.json").read_text())
    raw = {k: v for k, v in {**raw, **(config or {})}.items() if k not in drop}
    (target / "config.json").write_text(json.dumps(raw))  # Infinity and NaN written as JSON's extensions
    return target


def refused(load, path, match, names):
    """`load(path)` is one UserError line that matches `match` and starts with the file `names`."""
    with pytest.raises(UserError, match=match) as error:
        load(path)
    message = str(error.value)
    assert message.startswith(f"{path / names}: ") and "\n" not in message, message
    return message


@pytest.mark.parametrize("family", ["bert", "roberta", "xlm-roberta", "electra"])
def test_a_config_without_the_token_type_table_its_weights_hold_is_refused(families, tmp_path, family):
    bad = edited(families[family], tmp_path / "bad", {"type_vocab_size": 0})
    refused(load_pretrained, bad, r"token_type_embeddings\.weight", "model.safetensors")


@pytest.mark.parametrize("family, change, drop, message", [
    ("distilbert", {"n_layers": 3}, (), "n_layers 3: model.safetensors holds 2 encoder layers"),
    ("distilbert", {"dim": 32, "n_heads": 4}, (), r"dim 32 does not fit model.safetensors"),
    ("distilbert", {"hidden_dim": 91}, (), r"hidden_dim 91 does not fit model.safetensors"),
    ("electra", {}, ("embedding_size",), r"embedding_size 128 does not fit model.safetensors"),
    ("roberta", {"intermediate_size": 71}, (), r"intermediate_size 71 does not fit model.safetensors"),
    ("bert", {"vocab_size": 10 ** 12}, (), r"vocab_size 1000000000000 does not fit model.safetensors"),
    ("xlm-roberta", {"max_position_embeddings": 61}, (), r"max_position_embeddings 61 does not fit"),
])
def test_a_size_the_tensors_contradict_names_the_key_as_config_json_spells_it(families, tmp_path, family, change,
                                                                            drop, message):
    bad = edited(families[family], tmp_path / "bad", change, drop)
    refused(load_pretrained, bad, message, "config.json")


@pytest.mark.parametrize("family, change, message", [
    ("bert", {"layer_norm_eps": float("inf")}, "layer_norm_eps must be finite, not inf"),
    ("roberta", {"layer_norm_eps": float("nan")}, "layer_norm_eps must be positive, not nan"),
    ("electra", {"hidden_dropout_prob": float("nan")}, r"hidden_dropout_prob must be in \[0, 1\), not nan"),
    ("distilbert", {"n_layers": 0}, "n_layers must be positive, not 0"),  # DistilBERT's key, not num_hidden_layers
    ("distilbert", {"dim": 65}, "dim 65 is not a multiple of n_heads 4"),
])
def test_a_number_that_makes_the_maths_meaningless_is_refused(families, tmp_path, family, change, message):
    bad = edited(families[family], tmp_path / "bad", change)
    refused(load_pretrained, bad, message, "config.json")


def test_weights_that_are_not_floating_point_are_refused_not_converted(families, tmp_path):
    bad = edited(families["bert"], tmp_path / "bad")
    tensors = load_file(bad / "model.safetensors")
    name = next(k for k in tensors if k.endswith("attention.self.query.weight"))
    tensors[name] = tensors[name].round().long()
    save_file(tensors, bad / "model.safetensors")
    refused(load_pretrained, bad, r"not floating-point numbers: encoder\.layer\.0\.attention\.self\.query\.weight "
            r"is torch\.int64", "model.safetensors")


# --- a trained run's own config against its tensors ---------------------------------------------------------

@pytest.fixture(scope="module")
def crf_run(tmp_path_factory, checkpoint_dir):
    """A run with a CRF and a word-shape table on its heads' input."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64)
    model = build_model(Bert(config), HeadConfig(n_labels=2, n_tags=3, crf=True), TAGS, word_shapes="heads")
    meta = {"labels": ["a", "b"], "tags": TAGS, "max_len": 32, "word_shapes": "heads"}
    directory = tmp_path_factory.mktemp("crf") / "run"
    with atomic_directory(directory) as tmp:
        write_model(tmp, model, meta, checkpoint_dir)
    return directory


def with_meta(run, target, **changes):
    shutil.copytree(run, target)
    raw = json.loads((target / "config.json").read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        (raw["minimtl"][section] if field else raw["minimtl"]).update({field or section: value})
    (target / "config.json").write_text(json.dumps(raw))
    return target


@pytest.mark.parametrize("changes, tensor", [
    ({"heads__crf": False}, r"ner_head\.crf\.transitions"),
    ({"word_shapes": None}, r"head_input\.weight"),
])
def test_a_run_whose_settings_deny_tensors_it_holds_is_refused(crf_run, tmp_path, changes, tensor):
    load_checkpoint(crf_run)  # as written, it loads
    bad = with_meta(crf_run, tmp_path / "bad", **changes)
    refused(load_checkpoint, bad, f"holds tensors its config.json does not build: .*{tensor}", "model.safetensors")


@pytest.mark.parametrize("temperature", [{"ner": 1e-300}, {"cls": 1e300}, {"cls": float("nan")}, {"ner": 0.01},
                                         {"cls": float("inf")}])
def test_a_stored_temperature_calibration_could_not_have_written_is_refused(crf_run, tmp_path, temperature):
    bad = with_meta(crf_run, tmp_path / "bad", temperature=temperature)
    refused(load_checkpoint, bad, r"'minimtl.temperature' should map 'cls' and 'ner' to numbers from 0.05 to 20",
            "config.json")


def test_the_edges_of_the_calibrated_range_load(crf_run, tmp_path):
    load_checkpoint(with_meta(crf_run, tmp_path / "edges", temperature={"cls": 0.05, "ner": 20}))


# --- tokenizer files ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("family, stray, kind, message", [
    ("roberta", "vocab.txt", "wordpiece-cased", "is a WordPiece tokenizer's file, but config.json says model_type "
                                                "'roberta', pretrained with BPE"),
    ("bert", "vocab.json", "bpe-files", "is a BPE tokenizer's file, but config.json says model_type 'bert'"),
    ("distilbert", "merges.txt", "bpe-files", "is a BPE tokenizer's file"),
])
def test_tokenizer_files_of_another_kind_beside_the_model_are_refused(families, tmp_path, family, stray, kind,
                                                                     message):
    bad = edited(families[family], tmp_path / "bad")
    write_tokenizer(tmp_path / "other", kind)
    shutil.copy(tmp_path / "other" / stray, bad / stray)
    refused(lambda p: load_tokenizer(p, model_type=family), bad, message, stray)


def test_a_tokenizer_json_of_another_kind_is_refused(families, tmp_path):
    bad = edited(families["xlm-roberta"], tmp_path / "bad")  # its tokenizer.json is a unigram model
    write_tokenizer(tmp_path / "bpe", "bpe-json")
    shutil.copy(tmp_path / "bpe" / "tokenizer.json", bad / "tokenizer.json")
    refused(lambda p: load_tokenizer(p, model_type="xlm-roberta"), bad,
            "holds a BPE tokenizer, but config.json says model_type 'xlm-roberta', pretrained with Unigram",
            "tokenizer.json")


def test_a_broken_bpe_vocabulary_is_named_not_its_merges(families, tmp_path):
    bad = edited(families["roberta"], tmp_path / "bad")
    (bad / "vocab.json").write_text('["not", "a", "vocabulary"]')
    refused(load_tokenizer, bad, "not a BPE vocabulary", "vocab.json")


def test_a_run_refuses_its_weights_tokenizer_files_of_another_kind(tiny_data, tiny_weights, tmp_path):
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights, weights)
    write_tokenizer(tmp_path / "bpe", "bpe-files")
    shutil.copy(tmp_path / "bpe" / "vocab.json", weights / "vocab.json")
    cfg = RunConfig(data=[str(tiny_data)], weights=str(weights), out=str(tmp_path / "out"), epochs=1)
    with pytest.raises(UserError, match="vocab.json: is a BPE tokenizer's file"):
        train(cfg, log=lambda line: None)
    assert not (tmp_path / "out").exists()


# --- every file a reader opens, through the one check ---------------------------------------------------------

@pytest.mark.parametrize("name", READ_FILES)
def test_every_checkpoint_file_is_refused_through_a_symlink_out_of_it(tiny_weights, tmp_path, name):
    directory = tmp_path / "weights"
    shutil.copytree(tiny_weights, directory)
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    (directory / name).parent.mkdir(exist_ok=True)
    (directory / name).unlink(missing_ok=True)
    (directory / name).symlink_to(outside)
    with pytest.raises(UserError, match="is a symbolic link out of the checkpoint"):
        check_files(directory)


def test_a_side_file_through_a_symlink_is_never_copied_into_a_run(tiny_data, tiny_weights, tmp_path):
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights, weights)
    secret = tmp_path / "secret.json"
    secret.write_text('{"secret": 1}')
    (weights / "special_tokens_map.json").symlink_to(secret)
    cfg = RunConfig(data=[str(tiny_data)], weights=str(weights), out=str(tmp_path / "out"), epochs=1)
    with pytest.raises(UserError, match="special_tokens_map.json: is a symbolic link out of the checkpoint"):
        train(cfg, log=lambda line: None)
    assert not (tmp_path / "out").exists()


# --- resume ---------------------------------------------------------------------------------------------------

def stop_after_epoch_1(line):
    if line.startswith("epoch  1/"):
        raise KeyboardInterrupt


def test_resume_refuses_weights_that_changed_under_the_run(tiny_data, tiny_weights, tmp_path):
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights, weights)
    cfg = RunConfig(data=[str(tiny_data)], weights=str(weights), out=str(tmp_path / "out"), epochs=2, batch_size=16)
    with pytest.raises(Interrupted):
        train(cfg, log=stop_after_epoch_1)
    tensors = load_file(weights / "model.safetensors")  # the same shapes, other values: another model
    save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in tensors.items()}, weights / "model.safetensors")
    state = (tmp_path / "out" / "resume" / "state.json").read_bytes()
    with pytest.raises(UserError, match="the pretrained weights changed since this run was interrupted"):
        train(resume_config(tmp_path / "out"), log=lambda line: None, resume=True)
    assert (tmp_path / "out" / "resume" / "state.json").read_bytes() == state
    save_file(tensors, weights / "model.safetensors")  # the weights it started from: it resumes
    assert train(resume_config(tmp_path / "out"), log=lambda line: None, resume=True)["best_epoch"] in (1, 2)
