"""Training on a checkpoint of every family, end to end: two epochs on the tiny data set, reload, predict as
training did; the saved run is still a checkpoint of its family, which its own `transformers` class loads;
freezing, LoRA and the CLIs' one-line errors work the same for all of them."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT
from family_checkpoints import FAMILIES, write_checkpoint, write_checkpoints
from minimtl import UserError
from minimtl.machinery.settings import RunConfig
from minimtl.machinery.checkpoint import load_predictor
from minimtl.machinery.checkpoint import load_checkpoint
from minimtl.machinery.report import evaluate_file
from minimtl.machinery.run import train
from minimtl.extensions.family_tokenizers import load_tokenizer

transformers = pytest.importorskip("transformers")

TEXTS = ["Alice went to Paris last summer.", "Scientists at Harvard say their quantum computer solved it.", "ok"]
HF_CLASS = {"bert": "BertModel", "roberta": "RobertaModel", "xlm-roberta": "XLMRobertaModel",
            "distilbert": "DistilBertModel", "distilbert-sinusoidal": "DistilBertModel", "electra": "ElectraModel"}


def run(tiny_data, weights, out, **overrides):
    settings = dict(epochs=2, batch_size=16, lr_backbone=1e-3, lr_heads=1e-2, max_len=48) | overrides
    return train(RunConfig(data=[str(tiny_data)], weights=str(weights), out=str(out), **settings),
                 log=lambda line: None)


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    """family -> (weights, run directory, train's results), each family trained once for the whole module."""
    done = {}

    def trained(family):
        if family not in done:
            weights = tmp_path_factory.mktemp(family)
            write_checkpoint(weights, family)
            out = tmp_path_factory.mktemp("runs") / family
            done[family] = weights, out, run(tiny_data, weights, out)
        return done[family]

    return trained


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_run_of_every_family_reloads_and_predicts_as_training_did(runs, family, tiny_data):
    weights, out, results = runs(family)
    # The dev scores were computed in training, on the model in memory; these come from the files on disk.
    assert evaluate_file(out, tiny_data, "dev").scores == results["dev"]
    first, second = load_predictor(out), load_predictor(out)
    predictions = [p.to_json() for p in first.predictions(TEXTS)]
    assert predictions == [p.to_json() for p in second.predictions(TEXTS)]
    for prediction, text in zip(predictions, TEXTS):
        assert prediction["label"] is not None and len(prediction["tags"]) == len(prediction["words"])
        for entity in prediction["entities"]:
            assert text[entity["start"] : entity["end"]] == entity["text"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
@torch.no_grad()
def test_the_run_is_a_checkpoint_its_family_class_loads(runs, family):
    weights, out, _ = runs(family)
    model, _ = load_checkpoint(out)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == family.removesuffix("-sinusoidal")
    for name in ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt"):
        assert (out / name).is_file() == (weights / name).is_file()  # the family's own tokenizer files
    reference = getattr(transformers, HF_CLASS[family]).from_pretrained(out).eval()
    aligner = load_tokenizer(out, model.bert.config.vocab_size)
    encodings = aligner.encode([t.split() for t in TEXTS])
    T = max(len(e.input_ids) for e in encodings)
    ids = torch.tensor([e.input_ids + [aligner.pad_id] * (T - len(e.input_ids)) for e in encodings])
    mask = torch.tensor([[1] * len(e.input_ids) + [0] * (T - len(e.input_ids)) for e in encodings])
    ours, theirs = model.bert(ids, mask), reference(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (ours[mask.bool()] - theirs[mask.bool()]).abs().max().item() <= 1e-5
    trained_words = model.bert.embeddings.word_embeddings.weight
    start = load_file(weights / "model.safetensors")
    initial = next(v for k, v in start.items() if k.endswith("embeddings.word_embeddings.weight"))
    assert not torch.equal(trained_words, initial), "the encoder was fine-tuned, and saved as such"


def test_distilbert_sinusoids_stay_fixed_while_the_rest_learns(runs):
    weights, out, _ = runs("distilbert-sinusoidal")
    saved, start = load_file(out / "model.safetensors"), load_file(weights / "model.safetensors")
    assert torch.equal(saved["distilbert.embeddings.position_embeddings.weight"],
                       start["embeddings.position_embeddings.weight"])
    assert not torch.equal(saved["distilbert.embeddings.word_embeddings.weight"],
                           start["embeddings.word_embeddings.weight"])


@pytest.fixture(scope="module")
def electra_and_distilbert(tmp_path_factory):
    return write_checkpoints(tmp_path_factory, "electra", "distilbert")


def test_freezing_by_unit_holds_electras_projection_with_its_embeddings(electra_and_distilbert, tiny_data, tmp_path):
    electra, _ = electra_and_distilbert
    run(tiny_data, electra, tmp_path / "out", freeze_layers=1, epochs=1)
    saved, start = load_file(tmp_path / "out" / "model.safetensors"), load_file(electra / "model.safetensors")
    compared = 0
    for name, tensor in start.items():
        if name in saved:  # all but the discriminator's head, which is not ours
            # embeddings and embeddings_project are the one unit "embeddings"; layer.0 is the bottom layer
            frozen = name.startswith(("electra.embeddings", "electra.encoder.layer.0."))
            assert torch.equal(saved[name], tensor) == frozen, name
            compared += 1
    assert compared and "electra.embeddings_project.weight" in saved


def test_lora_adapts_distilbert_blocks_and_the_merged_run_loads_in_transformers(electra_and_distilbert, tiny_data,
                                                                               tmp_path):
    _, distilbert = electra_and_distilbert
    run(tiny_data, distilbert, tmp_path / "out", lora=4, epochs=1, lr_lora=1e-2)
    saved, start = load_file(tmp_path / "out" / "model.safetensors"), load_file(distilbert / "model.safetensors")
    moved = {k for k, v in start.items() if k.startswith("distilbert.") and not torch.equal(saved[k], v)}
    assert moved == {f"distilbert.transformer.layer.{i}.attention.{m}.weight" for i in range(2)
                     for m in ("q_lin", "v_lin")}  # the default targets, query and value: merged in
    transformers.DistilBertModel.from_pretrained(tmp_path / "out")


# --- the CLIs: a checkpoint that does not fit is one line and exit code 2 --------------------------------


def cli(*args):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300)


def one_line_error(done, *fragments):
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in done.stderr + done.stdout
    for fragment in fragments:
        assert str(fragment) in lines[0]


def test_the_clis_refuse_a_mixed_or_incomplete_checkpoint_in_one_line(runs, tiny_data, tmp_path):
    weights, out, _ = runs("roberta")
    mixed = tmp_path / "mixed"
    write_checkpoint(mixed, "bert")
    (mixed / "config.json").write_text((weights / "config.json").read_text())  # RoBERTa's config, BERT's tensors
    no_merges = tmp_path / "no-merges"
    no_merges.mkdir()
    for f in out.iterdir():
        if f.is_file() and f.name != "merges.txt":
            (no_merges / f.name).write_bytes(f.read_bytes())
    small_vocab = tmp_path / "small-vocab"
    write_checkpoint(small_vocab, "roberta")
    config = json.loads((small_vocab / "config.json").read_text())
    (small_vocab / "vocab.json").write_text(json.dumps({**json.loads((small_vocab / "vocab.json").read_text()),
                                                        **{f"extra{i}": config["vocab_size"] + i for i in range(3)}}))
    one_line_error(cli("train.py", "--data", tiny_data, "--weights", mixed, "--out", tmp_path / "a"),
                   mixed / "model.safetensors", "named bert.*")
    one_line_error(cli("infer.py", "--checkpoint", no_merges, "Alice went to Paris."), no_merges / "merges.txt")
    one_line_error(cli("train.py", "--data", tiny_data, "--weights", small_vocab, "--out", tmp_path / "b"),
                   small_vocab / "vocab.json", "vocab_size")


def files_of(run, directory):
    """A copy of the checkpoint files of `run` (its top-level files, not its resume state) in `directory`."""
    directory.mkdir()
    for f in run.iterdir():
        if f.is_file():
            shutil.copyfile(f, directory / f.name)
    return directory


def test_a_run_whose_config_disagrees_with_its_weights_is_refused_before_it_is_built(runs, tmp_path):
    _, out, _ = runs("roberta")
    bad = files_of(out, tmp_path / "bad")
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "vocab_size": 10 ** 12}))
    with pytest.raises(UserError, match=r"config.json: vocab_size 1000000000000 does not fit model.safetensors: "
                                        r"embeddings\.word_embeddings\.weight"):
        load_checkpoint(bad)  # 10^12 rows would never fit in memory: refused from the header


def test_a_bert_run_written_before_families_still_loads(runs, tmp_path):
    _, out, _ = runs("bert")
    old = files_of(out, tmp_path / "old")
    config = json.loads((old / "config.json").read_text())
    for key in ("model_type", "pad_token_id"):  # what runs of earlier versions did not write
        del config[key]
    (old / "config.json").write_text(json.dumps(config))
    assert set(load_file(old / "model.safetensors")) >= {"bert.embeddings.word_embeddings.weight"}
    assert load_predictor(old).predictions(TEXTS) == load_predictor(out).predictions(TEXTS)


def test_torchrun_the_feature_cache_the_crf_and_the_html_page_work_with_roberta(tiny_data, tmp_path):
    weights, out, page = tmp_path / "roberta", tmp_path / "run", tmp_path / "page.html"
    write_checkpoint(weights, "roberta")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "train.py", "--data", str(tiny_data), "--weights", str(weights), "--out", str(out),
                           "--freeze", "backbone", "--crf", "--epochs", "2", "--batch-size", "8", "--max-len", "48"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("feature cache: backbone frozen") == 1 and "global batch: 8 sentences x 2" in done.stdout
    assert json.loads((out / "config.json").read_text())["model_type"] == "roberta"
    drawn = cli("infer.py", "--checkpoint", out, "--html", page, *TEXTS)
    assert drawn.returncode == 0, drawn.stderr
    assert "Alice went to Paris last summer." in page.read_text(encoding="utf-8")
