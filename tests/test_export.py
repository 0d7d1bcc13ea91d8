"""A run exported for transformers (machinery/export.py) loads in that library's own task classes without a
warning and computes what minimtl computes; a head no class computes exactly is refused, and OUT kept as it was.
transformers is the test-only oracle here."""

import json
import logging
import shutil
import subprocess
import sys
import warnings
from contextlib import contextmanager

import pytest
import torch

from conftest import ROOT
from family_checkpoints import write_checkpoint
from minimtl import UserError
from minimtl.extensions.families import load_encoder
from minimtl.extensions.family_tokenizers import load_tokenizer
from minimtl.machinery.assemble import HeadConfig, build_model
from minimtl.machinery.checkpoint import atomic_directory, load_checkpoint, load_predictor, write_model
from minimtl.machinery.export import export
transformers = pytest.importorskip("transformers")

TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
LABELS = ["politics", "sports", "travel"]
# Sentences of the demo set whose words BERT's pre-tokenizer keeps whole, each with a multi-word entity.
TAGGED = [
    ("Zendaya and Focus Features part ways after disagreement over Glass Rivers sequel",
     "B-PER O B-ORG I-ORG O O O O O B-MISC I-MISC O"),
    ("Red Bull Racing sack coach Mikel Arteta after cup exit", "B-ORG I-ORG I-ORG O O B-PER I-PER O O O"),
    ("Taylor Swift sings in Mandarin for the first time on new single", "B-PER I-PER O O B-MISC O O O O O O O"),
    ("The Conservative Party wins most seats in Argentina election", "O B-ORG I-ORG O O O O B-LOC O"),
    ("Top 11 things to do in Cape Town this summer", "O O O O O O B-LOC I-LOC O O"),
]
TEXTS = [text for text, _ in TAGGED]
TOL = 1e-5


@contextmanager
def reported():
    """What transformers says while the block runs: its log records at WARNING and above, and Python warnings."""
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield records
    finally:
        logger.removeHandler(handler)
    records.extend(caught)


def save_run(directory, model, tags, labels, tokenizer_dir, word_shapes=None, context=False):
    meta = {"labels": labels, "tags": tags, "max_len": 48, "word_shapes": word_shapes, "context": context}
    with atomic_directory(directory) as tmp:
        write_model(tmp, model.eval(), meta, tokenizer_dir)
    return directory


def padded(tokenizer, texts):
    encodings = tokenizer.encode([text.split() for text in texts], 48)
    T = max(len(e.input_ids) for e in encodings)
    ids = torch.tensor([e.input_ids + [tokenizer.pad_id] * (T - len(e.input_ids)) for e in encodings])
    mask = torch.tensor([[1] * len(e.input_ids) + [0] * (T - len(e.input_ids)) for e in encodings])
    return ids, mask, encodings


@pytest.fixture(scope="module")
def tagger_run(tmp_path_factory, tiny_weights):
    """A BERT run whose linear tag head was fitted to TAGGED: it finds multi-word entities of every type."""
    encoder = load_encoder(tiny_weights)
    tokenizer = load_tokenizer(tiny_weights, encoder.config.vocab_size)
    torch.manual_seed(0)
    model = build_model(encoder, HeadConfig(n_labels=0, n_tags=len(TAGS)), TAGS)
    ids, mask, encodings = padded(tokenizer, TEXTS)
    with torch.no_grad():
        hidden = encoder(ids, mask)
    rows = [(i, p) for i, e in enumerate(encodings) for p in e.first_positions]
    features = torch.stack([hidden[i, p] for i, p in rows])
    gold = torch.tensor([TAGS.index(t) for _, tags in TAGGED for t in tags.split()])
    head = model.ner_head.out
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(head(features), gold).backward()
        optimizer.step()
    return save_run(tmp_path_factory.mktemp("tagger") / "run", model, TAGS, None, tiny_weights)


def test_a_runs_config_json_numbers_its_tags_as_transformers_reads_them(tagger_run):
    config = json.loads((tagger_run / "config.json").read_text())
    assert config["id2label"] == {str(i): tag for i, tag in enumerate(TAGS)}
    assert config["label2id"] == {tag: i for i, tag in enumerate(TAGS)}
    assert transformers.AutoConfig.from_pretrained(tagger_run).id2label == dict(enumerate(TAGS))


def test_a_run_without_id2label_still_loads_and_a_contradicting_one_is_refused(tagger_run, tmp_path):
    older = tmp_path / "older"
    shutil.copytree(tagger_run, older)
    config = json.loads((older / "config.json").read_text())
    del config["id2label"], config["label2id"]
    (older / "config.json").write_text(json.dumps(config))
    assert load_checkpoint(older)[1]["tags"] == TAGS
    config["id2label"] = {str(i): tag for i, tag in enumerate(reversed(TAGS))}
    (older / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="'id2label' and 'label2id' should number 'minimtl.tags' in order"):
        load_checkpoint(older)


def test_the_exported_tagger_finds_in_the_pipeline_the_entities_minimtl_finds(tagger_run, tmp_path):
    out = tmp_path / "exported"
    assert export(tagger_run, out) == [out / "token-classification"]
    ours = load_predictor(tagger_run).predictions(TEXTS)
    # The pipeline takes each word's most probable tag; minimtl the best valid BIO path. The fitted head makes
    # the two the same path here, so any difference below is the export's.
    assert [p.tags for p in ours] == [tags.split() for _, tags in TAGGED]
    with reported() as said:
        pipe = transformers.pipeline("token-classification", model=str(out / "token-classification"),
                                     aggregation_strategy="first")
        theirs = pipe(TEXTS)
    assert said == []
    assert [[(e["entity_group"], e["start"], e["end"]) for e in found] for found in theirs] == \
        [[(s.type, s.start, s.end) for s in p.entities] for p in ours]
    with reported() as said:  # the check above can hear: the encoder alone, read from the export, is reported
        transformers.BertModel.from_pretrained(out / "token-classification", add_pooling_layer=False)
    assert said


@pytest.fixture(scope="module", params=["distilbert", "electra", "roberta", "xlm-roberta"])
def family_run(request, tmp_path_factory):
    """A run of another family with random heads for both tasks, larger than their init, the sentence head's
    bias centring its logits on TEXTS: [CLS] differs little from text to text, and each class must win somewhere."""
    path = tmp_path_factory.mktemp(request.param)
    write_checkpoint(path, request.param)
    torch.manual_seed(1)
    encoder = load_encoder(path)
    model = build_model(encoder, HeadConfig(n_labels=len(LABELS), n_tags=len(TAGS)), TAGS)
    ids, mask, _ = padded(load_tokenizer(path, encoder.config.vocab_size), TEXTS)
    with torch.no_grad():
        for head in (model.cls_head, model.ner_head):
            head.out.weight.normal_(0, 1.0)
        model.cls_head.out.bias.copy_(-model.cls_head.out(encoder(ids, mask)[:, 0]).mean(0))
    return request.param, save_run(path / "run", model, TAGS, LABELS, path)


@torch.no_grad()
def test_each_family_exports_heads_whose_logits_are_minimtls(family_run, tmp_path):
    family, run = family_run
    model, _ = load_checkpoint(run)
    ids, mask, _ = padded(load_tokenizer(run, model.bert.config.vocab_size), TEXTS)
    hidden = model.bert(ids, mask)
    real = mask.bool()
    sentence_too = family in ("distilbert", "electra")  # whose classes can compute a linear head: export.py
    if not sentence_too:
        with pytest.raises(UserError, match="puts a tanh layer between \\[CLS\\] and the classes.*--only tags"):
            export(run, tmp_path / "refused")
        assert not (tmp_path / "refused").exists()
    folders = export(run, tmp_path / "out", only=None if sentence_too else "tags")
    prefix = {"distilbert": "DistilBert", "electra": "Electra", "roberta": "Roberta",
              "xlm-roberta": "XLMRoberta"}[family]
    with reported() as said:
        tagger = getattr(transformers, prefix + "ForTokenClassification").from_pretrained(folders[0]).eval()
    assert said == [] and tagger.config.id2label == dict(enumerate(TAGS))
    theirs = tagger(input_ids=ids, attention_mask=mask).logits
    assert (theirs[real] - model.ner_head(hidden, mask)[real]).abs().max() <= TOL
    if sentence_too:
        with reported() as said:
            classifier = getattr(transformers, prefix + "ForSequenceClassification").from_pretrained(folders[1]).eval()
        assert said == []
        ours = model.cls_head(hidden, mask)
        assert (classifier(input_ids=ids, attention_mask=mask).logits - ours).abs().max() <= TOL
        assert len(set(ours.argmax(-1).tolist())) > 1, "the texts must not all get one class"


@pytest.mark.parametrize("family_run", ["distilbert", "electra"], indirect=True)
def test_the_exported_sentence_head_gives_minimtls_label_in_the_pipeline(family_run, tmp_path):
    _, run = family_run
    out = tmp_path / "out"
    export(run, out)
    with reported() as said:
        pipe = transformers.pipeline("text-classification", model=str(out / "text-classification"))
        theirs = [found["label"] for found in pipe(TEXTS)]
    assert said == []
    assert theirs == [p.label for p in load_predictor(run).predictions(TEXTS)]


# --- heads that no transformers class computes -----------------------------------------------------------


@pytest.mark.parametrize("heads, shapes, reason", [
    (dict(crf=True), None, "it decodes with a CRF"),
    (dict(context=True), None, "it reads each sentence in its document"),
    (dict(token_head="lstm"), None, "it puts a BiLSTM before its output layer"),
    (dict(token_head="conv"), None, "it puts dilated convolutions before its output layer"),
    (dict(layers=2), None, "it reads a learned mix of the top 2 layers"),
    ({}, "heads", "the run adds word shapes to what the heads read"),
    ({}, "embeddings", "the run adds word shapes to the encoder"),
])
def test_a_head_transformers_cannot_compute_is_refused_in_one_line(tiny_weights, tmp_path, heads, shapes, reason):
    torch.manual_seed(0)
    context = heads.pop("context", False)
    model = build_model(load_encoder(tiny_weights), HeadConfig(n_labels=0, n_tags=len(TAGS), **heads), TAGS, shapes,
                        context)
    run = save_run(tmp_path / "run", model, TAGS, None, tiny_weights, shapes, context)
    with pytest.raises(UserError, match=f"cannot export its tag head exactly: {reason}"):
        export(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("family_run", ["distilbert"], indirect=True)
def test_mean_pooling_is_refused_and_only_tags_exports_the_tagger(family_run, tmp_path):
    _, run = family_run
    refused = tmp_path / "refused"
    shutil.copytree(run, refused)
    config = json.loads((refused / "config.json").read_text())
    config["minimtl"]["heads"]["pooling"] = "mean"
    (refused / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="it reads the mean of the tokens.*--only tags exports the tag head alone"):
        export(refused, tmp_path / "out")
    assert export(refused, tmp_path / "out", only="tags") == [tmp_path / "out" / "token-classification"]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "minimtl.machinery.export", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_a_refused_export_exits_2_with_one_line_and_leaves_an_earlier_export_as_it_was(tagger_run, tiny_weights,
                                                                                         tmp_path):
    out = tmp_path / "out"
    assert cli(tagger_run, out).returncode == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    torch.manual_seed(0)
    model = build_model(load_encoder(tiny_weights), HeadConfig(n_labels=0, n_tags=len(TAGS), crf=True), TAGS)
    crf_run = save_run(tmp_path / "crf", model, TAGS, None, tiny_weights)
    refused = cli(crf_run, out)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.startswith(f"error: {crf_run}: cannot export its tag head exactly") \
        and refused.stderr.count("\n") == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_an_export_replaces_an_earlier_one_but_no_other_folder(tagger_run, tmp_path):
    out = tmp_path / "out"
    export(tagger_run, out)
    (out / "token-classification" / "model.safetensors").write_bytes(b"stale")
    export(tagger_run, out)  # an earlier export is replaced whole
    assert (out / "token-classification" / "model.safetensors").stat().st_size > 100
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="already holds 'notes.txt', which no export wrote"):
        export(tagger_run, out)
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(UserError, match="--only tags changes nothing"):
        export(tagger_run, tmp_path / "other", only="tags")
    with pytest.raises(UserError, match="has no sentence head to export"):
        export(tagger_run, tmp_path / "other", only="sentence")
