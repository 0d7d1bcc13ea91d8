import json
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from minimtl.bio import chunks
from minimtl.guards.errors import UserError
from minimtl.extensions.context import merge_windows
from minimtl.inference import spans
from minimtl.extensions.subtokens import all_subtoken_labels
from minimtl.tokenization import labels as first_subtoken_labels, Word, split_text
from minimtl.extensions.context import windows
from minimtl.model import IGNORE_INDEX
from minimtl.extensions.family_tokenizers import load_tokenizer
def predict_words(aligner, words, score_fn, max_len, stride):
    """One score row per word: `score_fn` scores every window's positions, merge_windows picks each word's row."""
    wins = windows(aligner, words, max_len, stride)
    return merge_windows(wins, score_fn([enc for _, enc in wins]), len(words))


SETTINGS = settings(max_examples=150, deadline=None)

# Characters that stress normalisation: accents (precomposed and combining), CJK (split per character),
# Hangul (decomposed by NFD), emoji (outside the BMP, not in the vocabulary), zero-width and control
# characters (deleted), punctuation (split off), and whitespace inside a "word".
PIECES = list("abcXYZéÉñüßİ東京中文한국😀👍🏽" "\u0301\u0308\u200b\u200d\ufeff\x00\x07\x1b\x7f" ".,!?-'\"()")
char = st.one_of(st.sampled_from(PIECES), st.characters(exclude_categories=("Cs",)))
word = st.one_of(
    st.text(char, max_size=8),
    st.text("abcdefghij", min_size=20, max_size=150),  # many sub-tokens; over 100 characters -> one [UNK]
)
sentence = st.lists(word, max_size=20)
text = st.text(st.one_of(char, st.sampled_from(" \t\n\u3000\u00a0")), max_size=80)
TAGS = ["O", "B-A", "I-A", "B-B", "I-B"]
TAG_TO_ID = {t: i for i, t in enumerate(TAGS)}


@st.composite
def tagged(draw):
    words = draw(sentence)
    return words, draw(st.lists(st.sampled_from(TAGS), min_size=len(words), max_size=len(words)))


@pytest.fixture(scope="module")
def aligner(checkpoint_dir):
    return load_tokenizer(checkpoint_dir)


@pytest.fixture(scope="module")
def reference(checkpoint_dir):
    """The checkpoint's own tokenizer.json, the oracle for token ids."""
    tokenizer = Tokenizer.from_file(str(checkpoint_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def alone(aligner, word):
    """Sub-token ids of one word tokenized on its own; [UNK] if it has none."""
    ids = aligner.backend.encode([word], is_pretokenized=True, add_special_tokens=False).ids
    return ids or [aligner.unk_id]


def fake_scores(encodings):
    """Per position: (window index, token id, position), so tests can see where each row came from."""
    return [torch.tensor([[w, t, p] for p, t in enumerate(e.input_ids)]) for w, e in enumerate(encodings)]


# --- properties ------------------------------------------------------------------------------------


@SETTINGS
@given(sentence)
def test_one_first_subtoken_per_word(aligner, words):
    enc = aligner.encode([words])[0]
    expected_ids, expected_first = [], []
    for w in words:
        expected_first.append(len(expected_ids) + 1)
        expected_ids += alone(aligner, w)
    assert enc.truncated == (len(expected_ids) > 510)
    if not enc.truncated:
        assert enc.input_ids == [aligner.cls_id, *expected_ids, aligner.sep_id]
        assert enc.first_positions == expected_first  # one per word, strictly increasing
    for i, p in enumerate(enc.first_positions):
        assert enc.word_ids[p] == i and enc.word_ids[p - 1] != i
    assert enc.word_ids[0] is None and enc.word_ids[-1] is None


@SETTINGS
@given(sentence, st.integers(3, 30))
def test_truncation_keeps_a_prefix(aligner, words, max_len):
    full = aligner.encode([words])[0]
    cut = aligner.encode([words], max_len=max_len)[0]
    assert len(cut.input_ids) <= max_len
    assert cut.truncated == (len(full.input_ids) > max_len)
    assert cut.input_ids[:-1] == full.input_ids[: len(cut.input_ids) - 1]
    assert cut.first_positions == [p for p in full.first_positions if p < max_len - 1]


@SETTINGS
@given(tagged(), st.integers(3, 64), st.booleans())
def test_specials_and_continuations_are_ignored(aligner, example, max_len, all_subtokens):
    # Padding is added later (batches.py), with IGNORE_INDEX too; here: every position of the encoding.
    words, tags = example
    enc = aligner.encode([words], max_len=max_len)[0]
    labels = (all_subtoken_labels if all_subtokens else first_subtoken_labels)(enc, tags, TAG_TO_ID)
    assert len(labels) == len(enc.input_ids)
    for p, label in enumerate(labels):
        if enc.word_ids[p] is None or (not all_subtokens and p not in enc.first_positions):
            assert label == IGNORE_INDEX
        else:
            assert label != IGNORE_INDEX


@SETTINGS
@given(tagged())
def test_labels_round_trip(aligner, example):
    words, tags = example
    enc = aligner.encode([words])[0]
    kept = tags[: len(enc.first_positions)]
    first_only = first_subtoken_labels(enc, tags, TAG_TO_ID)
    assert [TAGS[first_only[p]] for p in enc.first_positions] == kept
    every = all_subtoken_labels(enc, tags, TAG_TO_ID)
    assert [TAGS[every[p]] for p in enc.first_positions] == kept
    for p, w in enumerate(enc.word_ids):
        if w is not None and p not in enc.first_positions:  # a continuation: never a B- tag
            assert TAGS[every[p]] == tags[w].replace("B-", "I-")


@SETTINGS
@given(text, st.data())
def test_raw_text_words_and_spans(aligner, reference, text, data):
    words = split_text(aligner, text)
    at = 0
    for w in words:
        assert w.text and w.text == text[w.start : w.end] and at <= w.start
        gap = text[at : w.start]  # what lies between words normalises to nothing but whitespace
        assert aligner.backend.normalizer.normalize_str(gap).strip() == ""
        at = w.end
    assert aligner.backend.normalizer.normalize_str(text[at:]).strip() == ""
    # The words, encoded as pre-split input, are exactly what the checkpoint's tokenizer makes of the text.
    ids = aligner.encode([[w.text for w in words]], max_len=10_000)[0].input_ids
    assert ids == reference.encode(text).ids

    tags = data.draw(st.lists(st.sampled_from(TAGS), min_size=len(words), max_size=len(words)))
    entities = [(*chunk, data.draw(st.floats(0, 1))) for chunk in chunks(tags)]
    found = spans(text, words, entities)
    assert [(s.type, s.first_word, s.last_word, s.confidence) for s in found] == entities
    for s in found:
        assert s.text == text[s.start : s.end] == text[words[s.first_word].start : words[s.last_word].end]
        assert s.text.startswith(words[s.first_word].text) and s.text.endswith(words[s.last_word].text)


def check_windows(wins, n_words, max_len):
    """Windows start at the first word, always move on, skip no word, end at the last, and fit max_len."""
    assert wins[0][0] == 0
    for (first, enc), (next_first, _) in zip(wins, wins[1:]):
        assert first < next_first <= first + len(enc.first_positions)  # progress, and no word skipped
    assert wins[-1][0] + len(wins[-1][1].first_positions) == n_words
    assert all(len(enc.input_ids) <= max_len for _, enc in wins)


@SETTINGS
@given(st.lists(word, max_size=60), st.integers(3, 24), st.data())
def test_windows_give_one_row_per_word(aligner, words, max_len, data):
    stride = data.draw(st.integers(0, max_len - 3))
    wins = windows(aligner, words, max_len, stride)
    check_windows(wins, len(words), max_len)

    rows = predict_words(aligner, words, fake_scores, max_len, stride)
    assert rows.shape == (len(words), 3)
    for i, w in enumerate(words):
        assert rows[i, 1] == alone(aligner, w)[0]  # each row is its word's first sub-token

    single = aligner.encode([words], max_len)[0]
    if not single.truncated:
        assert len(wins) == 1 and wins[0][1] == single
        expected = fake_scores([single])[0][single.first_positions]
        assert torch.equal(rows, expected)


@SETTINGS
@given(tagged(), st.integers(3, 40), st.booleans(), text)
def test_nothing_raises(aligner, example, max_len, all_subtokens, raw):
    words, tags = example
    for enc, enc_tags in zip(aligner.encode([words, words[::-1], []], max_len), [tags, tags[::-1], []]):
        rule = all_subtoken_labels if all_subtokens else first_subtoken_labels
        rule(enc, enc_tags, {"O": 0, "B-A": 1})  # other tags are unseen
    predict_words(aligner, words, fake_scores, max_len, max_len // 3 - 1 if max_len > 5 else 0)
    found = split_text(aligner, raw)
    spans(raw, found, [("A", i, i, 0.5) for i in range(len(found))])


# --- examples --------------------------------------------------------------------------------------


def test_split_text_splits_off_punctuation(aligner):
    words = [Word("I", 0, 1), Word("love", 2, 6), Word("Paris", 7, 12), Word(".", 12, 13)]
    assert split_text(aligner, "I love Paris.") == words


def test_split_text_offsets_are_characters(aligner):
    text = "😀 東京 Jose\u0301 a\u200bb"
    assert [w.text for w in split_text(aligner, text)] == ["😀", "東", "京", "Jose\u0301", "a\u200bb"]


def test_zero_width_word_gets_unk(aligner):
    enc = aligner.encode([["I", "\u200b", "Paris"]])[0]
    assert enc.first_positions == [1, 2, 3]
    assert enc.input_ids[2] == aligner.unk_id and enc.word_ids == [None, 0, 1, 2, None]
    labels = first_subtoken_labels(enc, ["O", "B-A", "B-B"], TAG_TO_ID)
    assert labels == [IGNORE_INDEX, TAG_TO_ID["O"], TAG_TO_ID["B-A"], TAG_TO_ID["B-B"], IGNORE_INDEX]


def test_truncation_is_reported(aligner):
    words = "add step to me to the 50 clásicos playlist".split()  # clásicos: three sub-tokens
    enc = aligner.encode([words], max_len=10)[0]
    assert enc.truncated and len(enc.input_ids) == 10
    assert len(enc.first_positions) == 8  # the 8th word keeps its first sub-token; "playlist" is cut
    assert not aligner.encode([words], max_len=14)[0].truncated


def test_all_subtokens_continue_with_inside_tags(aligner):
    enc = aligner.encode([["the", "clásicos", "playlist"]])[0]  # cl ##asi ##cos, play ##list
    assert enc.word_ids == [None, 0, 1, 1, 1, 2, 2, None]
    tags = ["O", "B-A", "I-A"]
    assert first_subtoken_labels(enc, tags, TAG_TO_ID) == [-100, 0, 1, -100, -100, 2, -100, -100]
    assert all_subtoken_labels(enc, tags, TAG_TO_ID) == [-100, 0, 1, 2, 2, 2, 2, -100]
    # Without an id for I-A, continuations are ignored rather than taught as a second B-A.
    assert all_subtoken_labels(enc, tags, {"O": 0, "B-A": 1}) == [-100, 0, 1] + [-100] * 5


def test_unseen_tag_is_ignored(aligner):
    enc = aligner.encode([["in", "Paris"]])[0]
    assert first_subtoken_labels(enc, ["O", "B-city"], TAG_TO_ID) == [-100, 0, -100, -100]


def test_ten_thousand_words_give_ten_thousand_rows(aligner):
    text = " ".join(["We", "flew", "to", "Paris."] * 2_000)  # five words each: "Paris." is two
    words = split_text(aligner, text)
    assert len(words) == 10_000
    rows = predict_words(aligner, [w.text for w in words], fake_scores, max_len=128, stride=32)
    assert rows.shape == (10_000, 3)
    tags = ["B-A" if w.text == "Paris" else "O" for w in words]
    assert [s.text for s in spans(text, words, [(*c, 1.0) for c in chunks(tags)])] == ["Paris"] * 2_000


def test_each_word_scored_where_it_has_most_context(aligner):
    # Eight one-sub-token words, four per window, two shared: windows hold words 0-3, 2-5 and 4-7.
    words = ["a"] * 8
    assert [first for first, _ in windows(aligner, words, max_len=6, stride=2)] == [0, 2, 4]
    rows = predict_words(aligner, words, fake_scores, max_len=6, stride=2)
    # Word 2 is one word from window 0's cut edge and zero from window 1's left edge: window 0 wins.
    # The text's own ends are not cuts, so words 0-1 and 6-7 are scored by the outer windows.
    assert rows[:, 0].tolist() == [0, 0, 0, 1, 1, 2, 2, 2]


def test_word_longer_than_a_window_keeps_leading_subtokens(aligner):
    long = "abcdefghij" * 5  # 50 characters, far more sub-tokens than fit in 8 positions
    wins = windows(aligner, ["x", long, "y"], max_len=8, stride=2)
    assert all(len(enc.input_ids) <= 8 for _, enc in wins)
    assert any(enc.truncated for _, enc in wins)
    assert predict_words(aligner, ["x", long, "y"], fake_scores, max_len=8, stride=2).shape == (3, 3)


def test_ids_match_tokenizer_json(aligner, reference):
    sentences = [
        "Book a table at Café Mühlenberg in Zürich for 7 people tonight!",
        "Play the song \"Don't Stop Me Now\" by Queen on Spotify.",
        "What's the weather like in 東京 tomorrow, 23:00?",
        "unbelievably antidisestablishmentarianism (hyphen-ated) e-mail: x@y.com",
    ]
    for s in sentences:
        expected = reference.encode(s).ids
        assert aligner.encode([s.split()])[0].input_ids == expected
        assert aligner.encode([[w.text for w in split_text(aligner, s)]])[0].input_ids == expected


def test_lower_casing_follows_the_config(aligner, checkpoint_dir, tmp_path):
    shutil.copy(checkpoint_dir / "vocab.txt", tmp_path / "vocab.txt")
    default = load_tokenizer(tmp_path)  # no tokenizer_config.json: lower-case, like BertTokenizer
    assert default.encode([["Paris"]])[0].input_ids == aligner.encode([["paris"]])[0].input_ids
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    cased = load_tokenizer(tmp_path)
    assert cased.encode([["Paris"]])[0].input_ids != aligner.encode([["Paris"]])[0].input_ids


def test_user_errors(aligner, tmp_path):
    with pytest.raises(UserError, match="vocab.txt"):
        load_tokenizer(tmp_path)
    with pytest.raises(UserError, match="stride"):
        windows(aligner, ["a"], max_len=8, stride=6)
    with pytest.raises(UserError, match="max_len"):
        aligner.encode([["a"]], max_len=2)
