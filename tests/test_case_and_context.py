"""Word shapes (--word-shape) and document context (--context): what each promises, checked.

Word shapes: a zero table changes no output, bit for bit; each word's shape reaches exactly its own
sub-tokens, whatever the word (the alignment torture words); inference computes them as training does.
Context: a sentence is read inside a contiguous run of its own document's words that fills the window as far
as whole words allow; the context carries no label, cannot move the loss or a prediction, and a sentence is
tagged on exactly its own words; a document that fits in one window is read by infer.py as by evaluation.
"""

import json
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import test_alignment as base
from minimtl.batching import collate
from minimtl.bert import Bert, BertConfig
from minimtl.machinery.settings import RunConfig, recipe
from minimtl.guards.errors import UserError
from minimtl.evaluation import predict
from minimtl.freezing import units
from minimtl.machinery.checkpoint import atomic_directory, load_predictor, load_pretrained, write_model
from minimtl.machinery.data import Example, LabelVocab, Splits, load_split
from minimtl.machinery.run import build, train
from minimtl.machinery.sources import encode_examples, Source
from minimtl.model import IGNORE_INDEX, at_words, multitask_loss
from minimtl.machinery.assemble import HeadConfig, build_model, word_shapes_of
from minimtl.extensions.wordshape import NONE, SHAPES, word_shape
from minimtl.extensions.context import sentences_of, split_long_text
from minimtl.extensions.features import FeatureCache
from minimtl.machinery.report import context_notes
from batches import batch_of
from minimtl.extensions.family_tokenizers import load_tokenizer

SETTINGS = settings(max_examples=100, deadline=None)
TAGS = base.TAGS
CONFIG = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64)


@pytest.fixture(scope="module")
def aligner(checkpoint_dir):
    return load_tokenizer(checkpoint_dir)


def model_with(word_shapes, layers=1, crf=False, seed=0, context=False):
    torch.manual_seed(seed)
    heads = HeadConfig(3, len(TAGS), layers=layers, sentence_head="lstm", token_head="lstm", crf=crf)
    return build_model(Bert(CONFIG), heads, TAGS, word_shapes, context)


# --- word shapes -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("word_shapes", ["embeddings", "heads"])
@pytest.mark.parametrize("layers", [1, 3])
def test_a_zero_shape_table_changes_no_output_bit_for_bit(word_shapes, layers):
    plain, shaped = model_with(None, layers), model_with(word_shapes, layers)
    table = shaped.embedding_input if word_shapes == "embeddings" else shaped.head_input
    assert not table.weight.any() and table.weight.requires_grad
    # Everything else is initialised as without the table: building it draws no random number.
    assert all(torch.equal(p, shaped.state_dict()[k]) for k, p in plain.state_dict().items())
    torch.manual_seed(1)
    ids = torch.randint(1000, 5000, (4, 11))
    mask = (torch.arange(11) < torch.tensor([[11], [7], [3], [9]])).long()
    shapes = torch.randint(0, len(SHAPES), (4, 11)) * mask
    for mode in (False, True):  # eval, and training mode with the same dropout draws
        plain.train(mode), shaped.train(mode)
        torch.manual_seed(2)
        a = plain(batch_of(ids, mask))
        torch.manual_seed(2)
        b = shaped(batch_of(ids, mask, shapes))
        assert torch.equal(a.cls_logits, b.cls_logits) and torch.equal(a.ner_logits, b.ner_logits)
        torch.manual_seed(3)
        a = plain.features(batch_of(ids, mask))
        torch.manual_seed(3)
        assert torch.equal(a, shaped.features(batch_of(ids, mask, shapes)))


def test_the_shape_table_learns_and_special_positions_never_get_a_shape():
    model = model_with("embeddings")
    ids, mask = torch.randint(1000, 5000, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    shapes = torch.tensor([[NONE, 1, 2, 3, 4, NONE], [NONE, 5, 6, 7, 7, NONE]])
    model(batch_of(ids, mask, shapes)).ner_logits.square().sum().backward()
    grad = model.embedding_input.weight.grad
    assert not grad[NONE].any() and grad[1:].abs().sum(1).gt(0).all()
    with pytest.raises(ValueError, match="pass shape_ids"):
        model(batch_of(ids, mask))


@pytest.mark.parametrize("word, shape", [
    ("apple", "lower"), ("4th", "lower"), ("Apple", "capitalised"), ("A", "capitalised"), ("Jose\u0301", "capitalised"),
    ("\u01c5emal", "capitalised"), ("APPLE", "upper"), ("U.S.", "upper"), ("E\u0301COLE", "upper"),
    ("iPhone", "mixed"), ("McDonald", "mixed"), ("東京", "uncased"), ("القاهرة", "uncased"), ("1996", "digits"),
    ("3-1", "digits"), (",", "other"), ("😀", "other"), ("\u200b", "other"), ("", "other")])
def test_word_shapes(word, shape):
    assert SHAPES[word_shape(word)] == shape


def expected_shapes(aligner, words):
    """The oracle: every sub-token of a word (tokenized alone; [UNK] if it has none) carries the word's shape."""
    return [NONE] + [word_shape(w) for w in words for _ in base.alone(aligner, w)] + [NONE]


@SETTINGS
@given(base.tagged())
def test_each_word_shape_reaches_exactly_its_own_subtokens(aligner, example):
    words, tags = example
    split = encode_examples(aligner, [Example(tuple(words), tuple(tags))], None, LabelVocab(TAGS), 10_000,
                         word_shapes=True)
    assert split.extra.get("shape_ids")[0] == expected_shapes(aligner, words)
    assert len(split.extra.get("shape_ids")[0]) == len(split.input_ids[0])


def spied(predictor):
    """What the predictor's forward passes got and gave: {"rows", "extra", "out"} of its last call."""
    seen, real = {}, predictor._run

    def run(rows, extra):
        seen.update(rows=rows, extra=extra, out=real(rows, extra))
        return seen["out"]
    predictor._run = run
    return seen


def training_rows(model, split):
    """Each word's tag logits (words, K), every sentence of `split` batched as training and evaluation batch."""
    batch = collate(split, range(len(split)))
    with torch.inference_mode():
        out = model(batch)
    emissions, mask = at_words(out.ner_logits, batch.words)
    return torch.cat([emissions[row][mask[row]] for row in range(len(split))])


def shaped_checkpoint(directory, tokenizer_dir, context=False):
    """A checkpoint with word shapes in its encoder, their table trained-looking (random rows), so they matter."""
    model = model_with("embeddings", seed=3)
    with torch.no_grad():
        model.embedding_input.weight[1:].normal_()
    with atomic_directory(directory) as tmp:
        write_model(tmp, model, {"labels": ["a", "b", "c"], "tags": TAGS, "max_len": 64, "word_shapes": "embeddings",
                                 "context": context}, tokenizer_dir)
    return load_predictor(directory)


def test_inference_computes_the_shapes_as_training_does(checkpoint_dir, tmp_path):
    predictor = shaped_checkpoint(tmp_path / "run", checkpoint_dir)
    text = "Alice met BOB of iPhone fame in Paris in 1996 , 東 京 ."
    seen = spied(predictor)
    words = [w.text for w in predictor.predictions([text])[0].words]
    assert words == text.split()
    assert seen["extra"]["shape_ids"] == [expected_shapes(predictor.tokenizer, words)]
    split = encode_examples(predictor.tokenizer, [Example(tuple(words), ("O",) * len(words))], None, LabelVocab(TAGS), 64,
                         word_shapes=True)
    assert seen["rows"] == split.input_ids  # one window: the text, as training encodes it
    _, ner = seen["out"]
    assert torch.allclose(ner[0][split.first_positions[0]], training_rows(predictor.model, split), atol=1e-6)
    unshaped = replace(split, extra={"shape_ids": [[NONE] * len(split.extra["shape_ids"][0])]})
    assert not torch.allclose(training_rows(predictor.model, unshaped), training_rows(predictor.model, split))


def test_a_checkpoint_with_shapes_in_its_encoder_is_never_loaded_without_them(checkpoint_dir, tmp_path):
    from transformers import BertModel

    model = model_with("embeddings")
    with atomic_directory(tmp_path / "run") as tmp:
        write_model(tmp, model, {"labels": ["a", "b", "c"], "tags": TAGS, "word_shapes": "embeddings"}, checkpoint_dir)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["minimtl"]["word_shapes"] == "embeddings"
    # transformers loads the encoder without the table, and lists it among the tensors it did not use.
    _, info = BertModel.from_pretrained(tmp_path / "run", output_loading_info=True)
    assert "embedding_input.weight" in info["unexpected_keys"]
    with pytest.raises(UserError, match="trained with --word-shape"):  # minimtl refuses to drop it
        load_pretrained(tmp_path / "run")


def test_a_checkpoint_older_than_both_options_loads_with_neither(checkpoint_dir, tmp_path):
    with atomic_directory(tmp_path / "run") as tmp:
        write_model(tmp, model_with(None), {"labels": ["a", "b", "c"], "tags": TAGS, "max_len": 64}, checkpoint_dir)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert "word_shapes" not in config["minimtl"] and "context" not in config["minimtl"]
    predictor = load_predictor(tmp_path / "run")
    assert predictor.model.embedding_input is None and predictor.model.head_input is None
    assert len(predictor.predictions(["Alice went to Paris. She liked it."])[0].tags) == 9


def test_word_shapes_in_frozen_embeddings_are_refused(tiny_data, tiny_weights, tmp_path):
    for settings in ({"freeze": ["embeddings"]}, {"freeze_layers": 1}):
        cfg = RunConfig(data=[str(tiny_data)], weights=str(tiny_weights), out=str(tmp_path / "x"), word_shape=True,
                          **settings)
        with pytest.raises(UserError, match="--word-shape adds its vectors to the input embeddings"):
            train(cfg, log=lambda _: None)
        assert not (tmp_path / "x").exists()


def test_a_frozen_backbone_reads_word_shapes_by_default_where_the_tokenizer_erases_case(tiny_data, tiny_weights,
                                                                                       tmp_path):
    def shapes(erases_case, **settings):
        return recipe(RunConfig(**settings), BertConfig(num_hidden_layers=3), "mean", 2, 3, torch.device("cpu"),
                      erases_case=erases_case).word_shapes

    assert shapes(True, freeze=["backbone"]) == "heads" and shapes(False, freeze=["backbone"]) is None
    assert shapes(True) is None and shapes(True, lora=2) is None  # they would change the encoder: only when asked
    assert shapes(False, word_shape=True) == "embeddings" and shapes(True, freeze=["backbone"], word_shape=False) is None
    assert shapes(True, freeze=["embeddings"]) is None  # where they could not learn, the default is none
    # The default backbone's tokenizer lower-cases, and the demo's sentences have capitals: the heads read shapes.
    assert load_tokenizer(tiny_weights).lowercases
    lines = []
    model, sources, _, _ = build(RunConfig(data=[str(tiny_data)], weights=str(tiny_weights), freeze=["backbone"]),
                                 lines.append)
    assert word_shapes_of(model) == "heads" and "shape_ids" in sources[0].ids["train"].extra
    lower = tmp_path / "lower"
    lower.mkdir()
    for split in ("train", "dev", "test"):  # the same sentences, all lower-case: nothing for shapes to give back
        rows = [json.loads(line) for line in (tiny_data / f"{split}.jsonl").read_text().splitlines()]
        (lower / f"{split}.jsonl").write_text("".join(json.dumps({**r, "tokens": [w.lower() for w in r["tokens"]]})
                                                      + "\n" for r in rows))
    model, sources, _, _ = build(RunConfig(data=[str(lower)], weights=str(tiny_weights), freeze=["backbone"]),
                                 lines.append)
    assert word_shapes_of(model) is None and "shape_ids" not in sources[0].ids["train"].extra


def test_with_lora_the_shape_table_trains_with_the_adapters():
    from minimtl.extensions.lora import add_lora

    model = model_with("embeddings")
    add_lora(model.bert, 2, 16, 0.0, ["query", "value"])
    table = model.embedding_input.weight
    assert any(p is table for p in units(model)["adapters"])
    assert not any(p is table for p in units(model)["embeddings"])


# --- document context ----------------------------------------------------------------------------------------

@st.composite
def documents(draw):
    """Sentences of torture words, each with tags, in documents (None: a sentence on its own)."""
    examples, document = [], 0
    for _ in range(draw(st.integers(1, 8))):
        words, tags = draw(base.tagged().filter(lambda e: e[0]))
        if draw(st.booleans()):
            document += 1
        examples.append(Example(tuple(words), tuple(tags), document=draw(st.sampled_from([document, None]))))
    return examples


def document_of(examples, i):
    """The indices of the document that sentence i is in (consecutive examples with its document number)."""
    if examples[i].document is None:
        return [i]
    first = last = i
    while first > 0 and examples[first - 1].document == examples[i].document:
        first -= 1
    while last + 1 < len(examples) and examples[last + 1].document == examples[i].document:
        last += 1
    return list(range(first, last + 1))


@SETTINGS
@given(documents(), st.integers(8, 40))
def test_a_sentence_is_read_in_as_much_of_its_own_document_as_fits(aligner, examples, window):
    split = encode_examples(aligner, examples, None, LabelVocab(TAGS), 512, word_shapes=True, context=window)
    alone = encode_examples(aligner, examples, None, LabelVocab(TAGS), 512, word_shapes=True)
    for i, ex in enumerate(examples):
        doc = document_of(examples, i)
        words = [w for j in doc for w in examples[j].words]  # the document's words
        pieces = [base.alone(aligner, w) for w in words]
        s = sum(len(examples[j].words) for j in doc[: doc.index(i)])  # the sentence's first word in its document
        e = s + len(ex.words)
        # What the heads read is the sentence alone: its ids, labels, first positions and shapes.
        for name in ("input_ids", "first_positions", "tags"):
            assert getattr(split, name)[i] == getattr(alone, name)[i]
        assert split.extra["shape_ids"][i] == alone.extra["shape_ids"][i]
        ids, keep = split.extra["window_ids"][i], split.extra["keep"][i]
        own = sum(map(len, pieces[s:e]))
        if own > window - 2:  # alone, as without context
            assert ids == split.input_ids[i] and keep == list(range(len(ids)))
            continue
        # A contiguous run of the document's words around the sentence: it never crosses the document.
        left = keep[1] - 1  # sub-tokens before the sentence's first word
        a = next((a for a in range(s, -1, -1) if sum(map(len, pieces[a:s])) == left), None)
        b = next((b for b in range(e, len(words) + 1) if sum(map(len, pieces[e:b])) == len(ids) - 2 - left - own), None)
        assert a is not None and b is not None
        assert ids == [aligner.cls_id, *[t for p in pieces[a:b] for t in p], aligner.sep_id]
        assert len(ids) <= window
        # As many as fit: one more word on each side that has one would not fit.
        beyond = (len(pieces[a - 1]) if a > 0 else 0) + (len(pieces[b]) if b < len(words) else 0)
        assert a == 0 and b == len(words) or window - len(ids) < beyond
        # The heads read [CLS], the sentence's own sub-tokens and [SEP] of the window, in order.
        assert keep == [0, *range(left + 1, left + 1 + own), len(ids) - 1]
        assert [ids[k] for k in keep] == split.input_ids[i]
        shapes = [word_shape(w) for w, p in zip(words[a:b], pieces[a:b]) for _ in p]
        assert split.extra["window_shape_ids"][i] == [NONE, *shapes, NONE]


def test_without_documents_a_sentence_is_its_own_window(aligner):
    examples = [Example(("Alice", "in", "Paris"), ("B-A", "O", "B-B")), Example(("Bob",), ("B-A",))]
    plain = encode_examples(aligner, examples, None, LabelVocab(TAGS), 128, word_shapes=True)
    split = encode_examples(aligner, examples, None, LabelVocab(TAGS), 128, word_shapes=True, context=128)
    assert replace(split, extra={"shape_ids": split.extra["shape_ids"]}) == plain
    assert split.extra["window_ids"] == plain.input_ids
    assert split.extra["keep"] == [list(range(len(ids))) for ids in plain.input_ids]


DOCUMENT = [("EU", "rejects", "German", "call", "."), ("Peter", "Blackburn"), ("BRUSSELS", "1996"),
            ("The", "European", "Commission", "said", "so", ".")]


def document_source(aligner, context):
    examples = [Example(words, ("O",) * len(words), document=0) for words in DOCUMENT]
    examples.append(Example(("Other", "document"), ("O", "O"), document=1))
    tags = LabelVocab(TAGS)
    splits = Splits(examples, examples, None, "test")
    return Source("doc", splits, None, tags, {"dev": encode_examples(aligner, examples, None, tags, 512,
                                                                   context=context)})


@pytest.mark.parametrize("crf", [False, True])
def test_context_changes_the_states_and_never_what_is_labelled_or_scored(aligner, crf):
    in_context = model_with(None, crf=crf, context=True).eval()
    alone = model_with(None, crf=crf).eval()
    read, plain = document_source(aligner, 64), document_source(aligner, None)
    batch = collate(read.ids["dev"], range(len(DOCUMENT) + 1))
    assert torch.equal(batch.input_ids, collate(plain.ids["dev"], range(len(DOCUMENT) + 1)).input_ids)
    # Each sentence of the first document is read in the whole of it, the other document's alone.
    assert batch.extra["window_mask"].sum(1).tolist() == [17] * len(DOCUMENT) + [4]
    out = in_context(batch)
    assert out.ner_logits.shape[:2] == batch.input_ids.shape  # the heads see the sentence's own positions
    assert not torch.allclose(out.ner_logits, alone(batch).ner_logits, atol=1e-4)  # ... read in context
    _, tags = predict(in_context, read, "dev")
    assert [len(t) for t in tags] == [len(ex.words) for ex in read.splits.dev]  # exactly its own words tagged
    loss, _ = multitask_loss(in_context, out, batch)
    shaken = torch.where(batch.tags[..., None] == IGNORE_INDEX, torch.randn_like(out.ner_logits) * 1e3, out.ner_logits)
    assert torch.equal(loss, multitask_loss(in_context, replace(out, ner_logits=shaken), batch)[0])


def test_the_feature_cache_of_a_context_run_holds_each_sentences_own_states_read_in_its_window(aligner):
    model = model_with(None, layers=3, context=True).eval()
    source = document_source(aligner, 64)
    split = source.ids["dev"]
    cache = FeatureCache(model, [source], ["dev"], log=lambda line: None, dtype=torch.float32)
    assert cache.rows_of(split) == cache.rows_of(document_source(aligner, None).ids["dev"])  # no bigger than alone
    rows, starts = cache.states["doc", "dev"]
    for i, (window, keep) in enumerate(zip(split.extra["window_ids"], split.extra["keep"])):
        with torch.inference_mode():
            states = model.bert(torch.tensor([window]), torch.ones(1, len(window), dtype=torch.long), layers=3)
        assert torch.allclose(rows[starts[i] : starts[i] + len(keep)], states[0, keep], atol=1e-6)


def test_infer_reads_the_lines_of_a_text_as_evaluation_reads_a_document(checkpoint_dir, tmp_path, aligner):
    """Each line of the text is a sentence of one document: infer.py tags each as --evaluate does, the same
    windows, the same sentence layout for the heads (BiLSTMs here, which read every position they get)."""
    predictor = shaped_checkpoint(tmp_path / "run", checkpoint_dir, context=True)
    examples = [Example(words, ("O",) * len(words), document=0) for words in DOCUMENT]
    split = encode_examples(aligner, examples, None, LabelVocab(TAGS), 512, word_shapes=True, context=64)
    seen = spied(predictor)
    text = "\n".join(" ".join(words) for words in DOCUMENT)
    assert [w.text for w in predictor.predictions([text])[0].words] == text.split()
    assert seen["rows"] == split.input_ids and seen["extra"]["window_ids"] == split.extra["window_ids"]
    _, ner = seen["out"]
    inferred = torch.cat([rows[first] for rows, first in zip(ner, split.first_positions)])
    assert torch.allclose(inferred, training_rows(predictor.model, split), atol=1e-5)
    alone = encode_examples(aligner, examples, None, LabelVocab(TAGS), 512, word_shapes=True)
    assert not torch.allclose(training_rows(predictor.model, alone), training_rows(predictor.model, split))


def test_a_text_is_cut_into_sentences_after_a_full_stop_and_at_line_breaks(aligner):
    text = "Alice met U.S. officials. Then she left!\nBob stayed 3.5 days\n"
    words = split_long_text(aligner, text)
    assert [" ".join(w.text for w in words[r.start : r.stop]) for r in sentences_of(text, words)] == \
        ["Alice met U . S .", "officials .", "Then she left !", "Bob stayed 3 . 5 days"]


def test_a_context_model_tags_every_word_of_a_sentence_longer_than_its_window(checkpoint_dir, tmp_path):
    predictor = shaped_checkpoint(tmp_path / "run", checkpoint_dir, context=True)
    text = "Short one .\n" + " ".join(["Paris"] * 150) + " .\n\x07"  # 150 words, max_len 64; a line of no word
    pred = predictor.predictions([text, "\x07"])
    assert len(pred[0].tags) == len(pred[0].words) == 154 and pred[1].tags == []


# --- a run with both ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("freeze", [["backbone"], ["none"]])
def test_a_run_with_both_scores_as_seqeval_and_as_infer_evaluate(tiny_documents, tiny_weights, tmp_path, freeze):
    from seqeval.metrics import f1_score

    from minimtl.machinery.checkpoint import load_checkpoint
    from minimtl.machinery.report import evaluate_file

    lines = []
    cfg = RunConfig(data=[str(tiny_documents)], weights=str(tiny_weights), out=str(tmp_path / "run"), epochs=2,
                      batch_size=8, lr_backbone=1e-3, patience=0, word_shape=True, context=True, freeze=freeze,
                      token_head="linear")  # a BiLSTM would only make it slower
    results = train(cfg, log=lines.append)
    assert any("each sentence is read in its document (16 in train)" in line for line in lines)
    assert any("word shapes: a zero-initialised vector per shape" in line for line in lines)
    model, meta = load_checkpoint(tmp_path / "run")
    where = "heads" if freeze == ["backbone"] else "embeddings"
    assert meta["word_shapes"] == where and meta["context"] is True
    table = model.head_input if where == "heads" else model.embedding_input
    assert table.weight[1:].any() and not table.weight[NONE].any()  # it learned; NONE never did
    # infer.py --evaluate reads the split with the run's shapes and context: the same scores as training.
    report = evaluate_file(tmp_path / "run", tiny_documents, "dev")
    assert report.scores == results["dev"]
    source = Source("dev", Splits([], [], None, "dev"), None, LabelVocab(meta["tags"]))
    examples = load_split(tiny_documents, "dev")[0]
    source = replace(source, splits=replace(source.splits, dev=examples),
                     ids={"dev": encode_examples(load_tokenizer(tmp_path / "run"), examples, None, source.tags,
                                              512, word_shapes=True, context=meta["max_len"])})
    _, tags = predict(model, source, "dev")
    assert results["dev"]["entity_f1"] == pytest.approx(f1_score([list(ex.tags) for ex in examples], tags))


def test_evaluating_documents_and_a_model_trained_otherwise_says_so():
    alone, in_document = Example(("Bob",), ("B-A",)), Example(("Bob",), ("B-A",), document=0)
    assert context_notes({"context": True}, [alone])[0].startswith("the model was trained reading each sentence in its")
    assert context_notes({}, [in_document])[0].startswith("this data has documents (-DOCSTART-), and the model")
    assert context_notes({"context": True}, [in_document]) == context_notes({}, [alone]) == []
