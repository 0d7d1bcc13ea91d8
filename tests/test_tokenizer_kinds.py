"""First-sub-token labels, raw-text spans and windows work the same for WordPiece, byte-level BPE and unigram
pieces, on real tokenizer files trained here (family_checkpoints.py) and read back by `load_tokenizer`.

The properties are test_alignment.py's, with its strategies; the oracle for each word's pieces is the trained
tokenizer itself, given the word as it stands mid-text: after a space, for the tokenizers whose pieces mark a
word's start (Ġ, ▁).
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, trainers

import test_alignment as base
from family_checkpoints import corpus, write_tokenizer
from minimtl.batching import encode_split
from minimtl.bio import chunks
from minimtl.guards.errors import UserError
from minimtl.inference import spans
from minimtl.machinery.data import Example, LabelVocab
from minimtl.model import IGNORE_INDEX
from minimtl.tokenization import labels as first_subtoken_labels, WordTokenizer, split_text
from minimtl.extensions.context import windows
from minimtl.extensions.wordshape import NONE, word_shape
from minimtl.machinery.sources import encode_examples
from minimtl.extensions.family_tokenizers import load_tokenizer

SETTINGS = settings(max_examples=60, deadline=None)
KINDS = ["wordpiece-cased", "bpe-files", "bpe-json", "unigram"]


@pytest.fixture(scope="module", params=KINDS)
def kind(request, tmp_path_factory):
    """(kind, the WordTokenizer read from the files, the trained tokenizer as oracle)."""
    path = tmp_path_factory.mktemp(request.param)
    reference = write_tokenizer(path, request.param)
    reference.no_padding()
    return request.param, load_tokenizer(path, reference.get_vocab_size()), reference


def pieces(kind, word):
    """The oracle: the word's ids as the trained tokenizer makes them mid-text, [UNK] if it has none."""
    name, aligner, reference = kind
    ids = reference.encode(word if name.startswith("wordpiece") else " " + word, add_special_tokens=False).ids
    return ids or [aligner.unk_id]


def test_none_of_these_tokenizers_erases_case(kind):
    _, aligner, reference = kind
    assert not aligner.lowercases  # so the frozen recipe reads no word shapes by default (config.recipe)
    assert reference.encode("Paris").ids != reference.encode("paris").ids


@SETTINGS
@given(base.tagged())
def test_each_word_shape_reaches_exactly_its_own_pieces(kind, example):
    _, aligner, _ = kind
    words, tags = example
    split = encode_examples(aligner, [Example(tuple(words), tuple(tags))], None, LabelVocab(base.TAGS), 10_000,
                         word_shapes=True)
    assert split.extra.get("shape_ids")[0] == [NONE] + [word_shape(w) for w in words for _ in pieces(kind, w)] + [NONE]


@SETTINGS
@given(base.tagged())
def test_every_word_gets_exactly_one_labelled_piece(kind, example):
    _, aligner, _ = kind
    words, tags = example
    enc = aligner.encode([words], max_len=10_000)[0]
    expected, first = [], []
    for w in words:
        first.append(len(expected) + 1)
        expected += pieces(kind, w)
    assert enc.input_ids == [aligner.cls_id, *expected, aligner.sep_id]
    assert enc.first_positions == first
    labels = first_subtoken_labels(enc, tags, base.TAG_TO_ID)
    labelled = [p for p, label in enumerate(labels) if label != IGNORE_INDEX]
    assert labelled == first and [base.TAGS[labels[p]] for p in first] == tags
    assert [enc.word_ids[p] for p in first] == list(range(len(words)))


@SETTINGS
@given(base.text, st.data())
def test_spans_slice_the_original_text_exactly(kind, text, data):
    _, aligner, _ = kind
    words = split_text(aligner, text)
    normalize = aligner.backend.normalizer.normalize_str if aligner.backend.normalizer else str
    at = 0
    for w in words:
        assert w.text and w.text == text[w.start : w.end] and at <= w.start
        assert normalize(text[at : w.start]).strip() == ""  # between words: whitespace only
        at = w.end
    assert normalize(text[at:]).strip() == ""
    enc = aligner.encode([[w.text for w in words]], max_len=10_000)[0]
    assert len(enc.first_positions) == len(words)  # zero-piece words too

    tags = data.draw(st.lists(st.sampled_from(base.TAGS), min_size=len(words), max_size=len(words)))
    found = spans(text, words, [(*chunk, 1.0) for chunk in chunks(tags)])
    assert [(s.type, s.first_word, s.last_word) for s in found] == chunks(tags)
    for s in found:
        assert s.text == text[s.start : s.end] == text[words[s.first_word].start : words[s.last_word].end]


@SETTINGS
@given(st.lists(base.word, max_size=60), st.integers(3, 24), st.data())
def test_windows_never_drop_a_word(kind, words, max_len, data):
    _, aligner, _ = kind
    stride = data.draw(st.integers(0, max_len - 3))
    wins = windows(aligner, words, max_len, stride)
    base.check_windows(wins, len(words), max_len)
    rows = base.predict_words(aligner, words, base.fake_scores, max_len, stride)
    assert rows.shape == (len(words), 3)
    for i, w in enumerate(words):
        assert rows[i, 1] == pieces(kind, w)[0]  # each row is its word's first piece


# --- examples --------------------------------------------------------------------------------------


def test_a_word_gets_the_same_pieces_at_the_start_mid_text_and_after_a_split(kind):
    name, aligner, reference = kind
    words = split_text(aligner, "Paris. Paris, Paris")
    assert [w.text for w in words] == ["Paris", ".", "Paris", ",", "Paris"]
    enc = aligner.encode([[w.text for w in words]])[0]
    paris = [enc.input_ids[p : q] for p, q in zip(enc.first_positions, enc.first_positions[1:] + [None])][::2]
    assert paris[0] == paris[1] == paris[2][:-1]  # the last one ends with the closing special token
    if name != "wordpiece-cased":
        # The form pretraining saw after a space, not the one "Paris" has at the very start of a text.
        x = len(reference.encode("x", add_special_tokens=False).ids)
        assert paris[0] == reference.encode("x Paris", add_special_tokens=False).ids[x:]
        assert reference.id_to_token(paris[0][0])[0] in "Ġ▁"


def test_special_tokens_follow_the_family(kind):
    name, aligner, reference = kind
    names = ("[CLS]", "[SEP]", "[PAD]", "[UNK]") if name.startswith("wordpiece") else ("<s>", "</s>", "<pad>", "<unk>")
    assert (aligner.cls_id, aligner.sep_id, aligner.pad_id, aligner.unk_id) == tuple(map(reference.token_to_id, names))


def test_cased_tokenizers_keep_case(kind):
    _, aligner, _ = kind
    upper, lower = aligner.encode([["Paris"], ["paris"]])
    assert upper.input_ids != lower.input_ids


def test_a_missing_merges_file_is_one_line_naming_it(tmp_path):
    write_tokenizer(tmp_path, "bpe-files")
    (tmp_path / "merges.txt").unlink()
    with pytest.raises(UserError, match="merges.txt: no merges.txt beside vocab.json"):
        load_tokenizer(tmp_path)


def test_a_vocabulary_larger_than_the_embeddings_is_one_line_naming_it(tmp_path):
    reference = write_tokenizer(tmp_path, "unigram")
    with pytest.raises(UserError, match=f"tokenizer.json: holds {reference.get_vocab_size()} tokens but the "
                                        "model's config.json has vocab_size 100"):
        load_tokenizer(tmp_path, vocab_size=100)


def test_unreadable_tokenizer_files_are_one_line_naming_them(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(UserError, match="tokenizer.json: cannot read the tokenizer"):
        load_tokenizer(tmp_path)
    write_tokenizer(tmp_path / "bpe", "bpe-files")
    (tmp_path / "bpe" / "merges.txt").write_text("#version: 0.2\nnot-in-vocab also-not\n")
    with pytest.raises(UserError, match="merges.txt: cannot read the BPE vocabulary and merges"):
        load_tokenizer(tmp_path / "bpe")
    (tmp_path / "none").mkdir()
    with pytest.raises(UserError, match="vocab.txt: no vocab.txt .*, tokenizer.json or vocab.json \\+ merges.txt"):
        load_tokenizer(tmp_path / "none")


def test_a_vocabulary_without_the_special_tokens_is_refused(tmp_path):
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.train_from_iterator(corpus(), trainers.UnigramTrainer(vocab_size=400, special_tokens=["<unk>"],
                                                                    unk_token="<unk>"))
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(UserError, match="tokenizer.json: the vocabulary lacks the special tokens"):
        load_tokenizer(tmp_path)


def test_scores_come_back_per_word_for_every_tokenizer(kind):
    _, aligner, _ = kind
    words = [w.text for w in split_text(aligner, "Zoë visited Köln, 東京 and José 😀 e\u0301t\u00e9.")]
    rows = base.predict_words(aligner, words, base.fake_scores, max_len=8, stride=2)
    assert rows.shape == (len(words), 3) and torch.all(rows[:, 2] >= 1)


def test_a_character_that_normalises_to_several_words_stays_one_word(tmp_path):
    write_tokenizer(tmp_path, "unigram")  # NFKC: the two-dot leader is two full stops, which split apart
    aligner = load_tokenizer(tmp_path)
    assert [(w.text, w.start, w.end) for w in split_text(aligner, "Oh\u2025 no")] == [
        ("Oh", 0, 2), ("\u2025", 2, 3), ("no", 4, 6)]
