"""Several data sources in one run: `train.py --data A --data B` trains one model on corpora that each bring
the task(s) they have.

Here a CoNLL folder ("ner": entity tags only) and a CSV folder ("topics": sentence labels only), both cut
from the same small joint JSONL set, stand in for CoNLL-2003 and AG News. What must hold:

    each source keeps its own vocabulary      -> its labels or tags become the model's, in config.json
    a batch never mixes sources               -> and carries labels only for its source's task
    the sampler draws sources as requested    -> proportional (exact), uniform, temperature
    each source is scored on its own splits   -> "<source>/<metric>", equal to scoring it alone
    resuming is bit-exact                     -> also when the sources take turns at random
    mistakes are one-line errors              -> two sources of one task, a missing dev split, a bad flag
    a frozen backbone still uses one cache    -> built once for all sources, the encoder never moves
"""

import csv
import json
import math
import random
import subprocess
import sys
from collections import Counter

import pytest
import torch
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from test_resume import stop_after_epoch, without_timings

from minimtl import UserError
from minimtl.machinery.settings import MAX_LEN, RunConfig
from minimtl.evaluation import evaluate
from minimtl.machinery.checkpoint import load_checkpoint
from minimtl.machinery.data import LabelVocab
from minimtl.machinery.interrupts import Interrupted
from minimtl.machinery.resume import resume_config
from minimtl.machinery.sources import encode_sources, load_sources, vocabularies
from minimtl.machinery.sampling import epoch_batches, interleave, source_probabilities
from minimtl.machinery.run import build, train
from minimtl.extensions.family_tokenizers import load_tokenizer

SPLITS = ("train", "dev", "test")
NER_TRAIN = 32  # the two sources differ in size, so proportional, uniform and temperature sampling differ
BATCH = 8
QUIET = lambda _: None  # noqa: E731


# --- data: one joint JSONL folder, written out as a CoNLL folder (NER only) and a CSV folder (classification)

def jsonl_rows(tiny_data, split):
    return [json.loads(line) for line in (tiny_data / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def write_conll(folder, tiny_data, splits=SPLITS, rename_tag=lambda tag: tag):
    """`word TAG` lines, a blank line between sentences: train.txt, dev.txt, test.txt."""
    folder.mkdir(parents=True)
    for split in splits:
        rows = jsonl_rows(tiny_data, split)[: NER_TRAIN if split == "train" else None]
        sentences = ["\n".join(f"{word} {rename_tag(tag)}" for word, tag in zip(r["tokens"], r["tags"])) for r in rows]
        (folder / f"{split}.txt").write_text("\n\n".join(sentences) + "\n", encoding="utf-8")
    return folder


def write_csv(folder, tiny_data):
    """`text,label` rows under a header: train.csv, dev.csv, test.csv."""
    folder.mkdir(parents=True)
    for split in SPLITS:
        with open(folder / f"{split}.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows([" ".join(r["tokens"]), r["label"]] for r in jsonl_rows(tiny_data, split))
    return folder


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, tiny_data):
    """(the CoNLL folder "ner", the CSV folder "topics"): their folder names are the source names."""
    root = tmp_path_factory.mktemp("corpora")
    return write_conll(root / "ner", tiny_data), write_csv(root / "topics", tiny_data)


@pytest.fixture(scope="module")
def encoded(corpora, tiny_weights):
    """Both sources loaded, given the run's vocabularies and encoded, as `train` does before its first epoch."""
    sources = load_sources([str(p) for p in corpora])
    encode_sources(sources, load_tokenizer(tiny_weights), vocabularies(sources), RunConfig(), MAX_LEN, 512,
                   QUIET)
    return sources


def settings_for(corpora, tiny_weights, out, **overrides):
    values = dict(epochs=2, batch_size=BATCH, lr_backbone=1e-3, lr_heads=1e-2, patience=0) | overrides
    return RunConfig(data=[str(p) for p in corpora], weights=str(tiny_weights), out=str(out), **values)


@pytest.fixture(scope="module")
def two_source_run(tmp_path_factory, corpora, tiny_weights):
    """(run directory, results) of one 2-epoch run on both sources, fully fine-tuned."""
    out = tmp_path_factory.mktemp("two-sources") / "run"
    return out, train(settings_for(corpora, tiny_weights, out), log=QUIET)


def alone(path, tokenizer_dir):
    """One source loaded and encoded on its own, as a single-source run would: its own vocabulary only."""
    [source] = load_sources([str(path)])
    encode_sources([source], load_tokenizer(tokenizer_dir), vocabularies([source]), RunConfig(), MAX_LEN, 512,
                   QUIET)
    return source


# --- 1. each source brings its task and its vocabulary -------------------------------------------------------

def test_each_source_brings_its_own_task_and_vocabulary(corpora, tiny_data, two_source_run):
    ner, topics = load_sources([str(p) for p in corpora])
    assert (ner.name, ner.tasks) == ("ner", ["ner"])
    assert (topics.name, topics.tasks) == ("topics", ["cls"])
    assert load_sources([str(tiny_data)])[0].tasks == ["cls", "ner"]  # joint data brings both

    vocab = vocabularies([ner, topics])
    assert vocab.tags.names == LabelVocab.from_values(t for ex in ner.splits.train for t in ex.tags).names
    assert vocab.labels.names == LabelVocab.from_values(ex.label for ex in topics.splits.train).names
    assert vocab.tags.names[0] == "O" and "B-PER" in vocab.tags.names

    out, _ = two_source_run
    meta = json.loads((out / "config.json").read_text())["minimtl"]
    assert meta["tags"] == vocab.tags.names and meta["labels"] == vocab.labels.names
    assert meta["sources"] == {"ner": ["ner"], "topics": ["cls"]}
    saved = load_file(out / "model.safetensors")
    assert saved["ner_head.out.bias"].numel() == len(vocab.tags)
    assert saved["cls_head.out.bias"].numel() == len(vocab.labels)


def test_the_source_name_is_the_folder_name_made_unique(tmp_path, tiny_data):
    a = write_conll(tmp_path / "a" / "data", tiny_data)
    b = write_csv(tmp_path / "b" / "data", tiny_data)
    assert [s.name for s in load_sources([str(a), str(b)])] == ["data", "data'"]


# --- 2. a batch never mixes sources --------------------------------------------------------------------------

@pytest.mark.parametrize("sampling", ["proportional", "uniform", "temperature"])
def test_a_batch_holds_one_sources_sentences_and_only_its_tasks_labels(encoded, sampling):
    cfg = RunConfig(batch_size=BATCH, sampling=sampling, seed=3)
    n_batches = {s.name: math.ceil(len(s.ids["train"]) / BATCH) for s in encoded}
    for epoch in (1, 2):
        pairs = epoch_batches(encoded, cfg, epoch)
        assert len(pairs) == sum(n_batches.values())  # an epoch is the same amount of work whatever the sampling
        for source, batch in pairs:
            split = source.ids["train"]
            assert 0 < len(batch.index) <= BATCH
            for row, i in enumerate(batch.index):  # each row is sentence i of *this* source's train split
                n = len(split.input_ids[i])
                assert batch.input_ids[row, :n].tolist() == split.input_ids[i]
                assert batch.attention_mask[row].sum() == n
            if "cls" in source.tasks:
                assert batch.tags is None and batch.labels.tolist() == [split.labels[i] for i in batch.index]
            else:
                assert batch.labels is None and batch.tags is not None
        if sampling == "proportional":  # every batch of every source exactly once (in a shuffled order)
            for source in encoded:
                own = [batch for s, batch in pairs if s is source]
                assert len(own) == n_batches[source.name]
                assert sorted(i for batch in own for i in batch.index) == list(range(len(source.ids["train"])))


def test_the_batch_order_is_a_function_of_seed_and_epoch(encoded):
    def order(seed, epoch, sampling):
        cfg = RunConfig(batch_size=BATCH, sampling=sampling, seed=seed)
        return [(s.name, batch.index) for s, batch in epoch_batches(encoded, cfg, epoch)]

    for sampling in ("proportional", "temperature"):
        assert order(0, 1, sampling) == order(0, 1, sampling)
        assert order(0, 1, sampling) != order(0, 2, sampling) != order(1, 2, sampling)


# --- 3. the sampler --------------------------------------------------------------------------------------------

def observed_frequencies(per_source, probabilities, n_epochs, seed=0):
    """How often each source was drawn over `n_epochs` calls of `interleave` with one seeded RNG, and the
    number of draws; also checks that a source's batches are taken in its list's order, starting over when
    the source is drawn more often than it has batches."""
    rng, counts, draws = random.Random(seed), Counter(), 0
    for _ in range(n_epochs):
        order = interleave(per_source, probabilities, rng)
        for i, batches in enumerate(per_source):
            taken = [b for j, b in order if j == i]
            assert taken == [batches[k % len(batches)] for k in range(len(taken))]
        counts.update(i for i, _ in order)
        draws += len(order)
    return [counts[i] / draws for i in range(len(per_source))], draws


@pytest.mark.parametrize("how", ["uniform", "temperature"])
def test_sources_are_drawn_as_often_as_requested(how):
    """Over N draws a source with probability p is drawn a Binomial(N, p) number of times: its observed
    frequency has standard deviation sqrt(p (1 - p) / N). 4 of those is exceeded by chance with probability
    6e-5 per source; the RNG is seeded, so the test is deterministic anyway."""
    sizes = [1000, 100, 10]
    probabilities = source_probabilities(sizes, how, temperature=2.0)
    per_source = [[f"source {i} batch {k}" for k in range(n // 10)] for i, n in enumerate(sizes)]  # 111 a epoch
    frequencies, n = observed_frequencies(per_source, probabilities, n_epochs=300)
    assert n == 300 * 111
    for p, f in zip(probabilities, frequencies):
        assert abs(f - p) <= 4 * math.sqrt(p * (1 - p) / n), (how, probabilities, frequencies)
    if how == "uniform":  # the smallest source (1 batch an epoch) is seen a third of the time: its list cycles
        assert frequencies[2] > 0.3


@settings(max_examples=25, deadline=None, derandomize=True)
@given(sizes=st.lists(st.integers(1, 1000), min_size=2, max_size=4), how=st.sampled_from(["uniform", "temperature"]),
       temperature=st.floats(1.0, 8.0), seed=st.integers(0, 2**32 - 1))
def test_drawn_frequencies_match_any_requested_distribution(sizes, how, temperature, seed):
    """As above for any sizes and T >= 1, where every p >= 1/3001 and so N p >= 6 draws: at 5 standard
    deviations (6e-7 per source under the normal approximation), plus one draw's worth for the skew of
    small counts. `derandomize` keeps the examples, and so the verdict, the same on every run."""
    probabilities = source_probabilities(sizes, how, temperature)
    per_source = [[(i, k) for k in range(5)] for i in range(len(sizes))]
    frequencies, n = observed_frequencies(per_source, probabilities, n_epochs=1000, seed=seed)
    for p, f in zip(probabilities, frequencies):
        assert abs(f - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1 / n


def test_proportional_interleaving_is_a_shuffle_of_every_batch():
    per_source = [[("a", k) for k in range(100)], [("b", k) for k in range(10)], [("c", 0)]]
    order = interleave(per_source, None, random.Random(0))
    assert sorted(batch for _, batch in order) == sorted(b for batches in per_source for b in batches)
    assert all(batch[0] == "abc"[i] for i, batch in order)
    assert order != [(i, b) for i, batches in enumerate(per_source) for b in batches]
    assert interleave(per_source[:1], [1.0], random.Random(0)) == [(0, b) for b in per_source[0]]  # one source


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(1, 10**6), min_size=1, max_size=6), temperature=st.floats(0.01, 100.0))
def test_source_probabilities(sizes, temperature):
    proportional = source_probabilities(sizes, "proportional")
    uniform = source_probabilities(sizes, "uniform")
    tempered = source_probabilities(sizes, "temperature", temperature)
    for probabilities in (proportional, uniform, tempered):
        assert sum(probabilities) == pytest.approx(1.0) and all(0 <= p <= 1 for p in probabilities)
    assert proportional == pytest.approx([n / sum(sizes) for n in sizes])
    assert uniform == [1 / len(sizes)] * len(sizes)
    assert source_probabilities(sizes, "temperature", 1.0) == pytest.approx(proportional)
    # A larger source is never less likely; T > 1 moves the largest source's share from proportional
    # towards uniform (and T < 1 beyond proportional).
    by_size = sorted(range(len(sizes)), key=lambda i: sizes[i])
    assert all(tempered[i] <= tempered[j] * (1 + 1e-9) for i, j in zip(by_size, by_size[1:]))
    big = by_size[-1]
    low, high = sorted([uniform[big], proportional[big]])
    if temperature >= 1:
        assert low * (1 - 1e-9) <= tempered[big] <= high * (1 + 1e-9)
    else:
        assert tempered[big] >= proportional[big] * (1 - 1e-9)


def test_a_small_temperature_is_close_to_always_the_largest_source():
    """n^(1/T) overflows a float for small T (120000 ** 100): the weights are computed in log space."""
    assert source_probabilities([120_000, 14_000], "temperature", 0.01) == pytest.approx([1.0, 0.0])
    assert source_probabilities([10**6, 10**6], "temperature", 0.005) == pytest.approx([0.5, 0.5])


# --- 4. each source is scored on its own splits ------------------------------------------------------------

def test_per_source_metrics_equal_scoring_each_source_alone(corpora, two_source_run):
    out, results = two_source_run
    model, meta = load_checkpoint(out)  # the best epoch's checkpoint, as infer.py loads it
    ner, topics = (alone(path, out) for path in corpora)
    assert ner.tags.names == meta["tags"] and topics.labels.names == meta["labels"]
    assert {key.split("/", 1)[0] for split in ("dev", "test") for key in results[split]} == {"ner", "topics"}
    for source in (ner, topics):
        for split in ("dev", "test"):
            own = {key.split("/", 1)[1]: v for key, v in results[split].items() if key.startswith(source.name + "/")}
            assert evaluate(model, source, split) == own, (source.name, split)
    assert "ner/entity_f1" in results["test"] and "entity_f1" not in results["test"]  # no unprefixed names
    assert "topics/label_accuracy" in results["test"] and "ner/label_accuracy" not in results["test"]


def test_test_metrics_keep_the_source_name_when_only_one_source_has_a_test_split(tmp_path, tiny_data,
                                                                                    tiny_weights):
    ner = write_conll(tmp_path / "ner", tiny_data)
    single_file = write_csv(tmp_path / "topics", tiny_data) / "train.csv"  # one file: a dev holdout, no test
    results = train(settings_for([ner, single_file], tiny_weights, tmp_path / "run", epochs=1), log=QUIET)
    assert {key.split("/", 1)[0] for key in results["dev"]} == {"ner", "train.csv"}
    assert "ner/entity_f1" in results["test"]


# --- 5. resuming is bit-exact ------------------------------------------------------------------------------

@pytest.mark.parametrize("sampling", ["proportional", "temperature"])
def test_resuming_a_two_source_run_equals_the_uninterrupted_run_bit_for_bit(corpora, tiny_weights, tmp_path,
                                                                             sampling):
    def run_settings(name):
        return settings_for(corpora, tiny_weights, tmp_path / name, epochs=2, sampling=sampling, keep_resume=True)

    whole = train(run_settings("whole"), log=QUIET)
    with pytest.raises(Interrupted, match="the state after epoch 1 is saved"):
        train(run_settings("cut"), log=stop_after_epoch(1))
    resumed = train(resume_config(tmp_path / "cut"), log=QUIET, resume=True)
    assert resumed == whole and "ner/entity_f1" in whole["test"]
    for name in ("model.safetensors", "resume/model.safetensors", "resume/optimizer.safetensors"):
        a, b = load_file(tmp_path / "whole" / name), load_file(tmp_path / "cut" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    logs = [[without_timings(json.loads(line)) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
            for run in ("whole", "cut")]
    assert logs[0] == logs[1] and len(logs[0]) == 2


# --- 6. mistakes are one-line errors -----------------------------------------------------------------------

def second_ner_source(tmp_path, tiny_data):
    """Another NER corpus, with its own tag set (PER is PERSON there)."""
    return write_conll(tmp_path / "people", tiny_data, rename_tag=lambda tag: tag.replace("PER", "PERSON"))


def test_two_sources_of_one_task_are_refused(corpora, tiny_data, tiny_weights, tmp_path):
    ner, topics = corpora
    people = second_ner_source(tmp_path, tiny_data)
    with pytest.raises(UserError, match="ner and people both have entity tags; one source per task"):
        load_sources([str(ner), str(people)])
    with pytest.raises(UserError, match="both have sentence labels; one source per task"):
        load_sources([str(topics), str(tiny_data)])
    with pytest.raises(UserError, match="one source per task"):
        train(settings_for([ner, topics, people], tiny_weights, tmp_path / "out"), log=QUIET)
    assert not (tmp_path / "out").exists()


def test_a_source_without_a_dev_split_is_refused(corpora, tiny_data, tmp_path):
    no_dev = write_conll(tmp_path / "no-dev", tiny_data, splits=("train", "test"))
    with pytest.raises(UserError, match=r"no-dev: no dev split") as error:
        load_sources([str(corpora[1]), str(no_dev)])
    assert "\n" not in str(error.value)


def test_the_same_source_twice_is_refused(corpora):
    ner, _ = corpora
    with pytest.raises(UserError, match="given twice as --data"):
        load_sources([str(ner), str(ner / ".." / "ner")])


def test_an_unknown_sampling_is_refused(corpora):
    with pytest.raises(UserError, match="--sampling must be one of proportional, uniform, temperature, not 'bogus'"):
        RunConfig(data=[str(p) for p in corpora], sampling="bogus").check()


def train_py(*args):
    return subprocess.run([sys.executable, "train.py", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_the_command_line_reports_these_mistakes_in_one_line(corpora, tiny_data, tiny_weights, tmp_path):
    ner, topics = corpora
    common = ["--weights", tiny_weights, "--epochs", "1", "--out", tmp_path / "out"]
    bad_flag = train_py("--data", ner, "--data", topics, *common, "--sampling", "bogus")
    assert bad_flag.returncode == 2 and "--sampling: invalid choice: 'bogus'" in bad_flag.stderr  # argparse
    people = second_ner_source(tmp_path, tiny_data)
    two_ner = train_py("--data", ner, "--data", people, *common)
    assert two_ner.returncode == 2 and "Traceback" not in two_ner.stderr
    [line] = two_ner.stderr.splitlines()
    assert line.startswith("error: ") and "one source per task" in line
    assert not (tmp_path / "out").exists()


# --- 7. a frozen backbone: one feature cache for all sources ---------------------------------------------

def test_frozen_backbone_with_two_sources_caches_once_and_trains_only_the_heads(corpora, tiny_weights, tmp_path):
    cfg = settings_for(corpora, tiny_weights, tmp_path / "out", freeze=["backbone"], epochs=2)
    initial = build(cfg, QUIET)[0].state_dict()  # what the run starts from: same seed, same build
    lines = []
    results = train(cfg, log=lines.append)
    [cache] = [line for line in lines if line.startswith("feature cache:")]
    assert f"encoded {NER_TRAIN + 16 + 48 + 16} sentences once" in cache  # train + dev of both sources
    assert {"ner/entity_f1", "topics/label_accuracy"} <= results["test"].keys()
    saved = load_file(tmp_path / "out" / "model.safetensors")
    assert saved.keys() == initial.keys()
    for name, tensor in initial.items():
        if name.startswith("bert."):
            assert torch.equal(saved[name], tensor), name
        else:
            assert not torch.equal(saved[name], tensor), name  # both heads learned, each from its own source
    initial_file = load_file(tiny_weights / "model.safetensors")
    assert all(torch.equal(saved["bert." + k], v) for k, v in initial_file.items())
