"""The data people have (issue 38): BIOES / BILOU tags, transformers-style JSON lines, a `validation` split,
tab-separated files. Each read from a sample written as those tools write it, and read as the same entities."""

import json
import re

import pytest

from minimtl.bio import chunks
from minimtl.guards.errors import UserError
from minimtl.machinery.data import load_data
from minimtl.machinery.sources import load_sources

WORDS = ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."]
BIO = ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"]
PERSON = (["Peter", "Blackburn", "visited", "New", "York", "City"], ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-LOC"])
BIOES = {"BIOES": ["B-PER", "E-PER", "O", "B-LOC", "I-LOC", "E-LOC"], "BILOU": ["B-PER", "L-PER", "O", "B-LOC", "I-LOC",
                                                                             "L-LOC"]}
# The tag names of transformers' conll2003 dataset, in the order of its ner_tags ids.
HF_CONLL_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def conll(path, sentences):
    path.write_text("-DOCSTART- -X- -X- O\n\n" + "\n\n".join("\n".join(f"{w} NNP B-NP {t}" for w, t in zip(*s))
                                                            for s in sentences) + "\n", encoding="utf-8")


@pytest.mark.parametrize("scheme", ["BIOES", "BILOU"])
def test_bioes_and_bilou_are_read_as_the_same_entities_in_bio(tmp_path, scheme):
    single = (["EU", "rejects", "it"], ["S-ORG" if scheme == "BIOES" else "U-ORG", "O", "O"])
    for split in ("train", "dev"):
        conll(tmp_path / f"{split}.txt", [(PERSON[0], BIOES[scheme]), single])
    splits = load_data(tmp_path)
    assert [list(ex.tags) for ex in splits.train] == [PERSON[1], ["B-ORG", "O", "O"]]
    assert chunks(splits.train[0].tags) == [("PER", 0, 1), ("LOC", 3, 5)]
    assert any("BIOES/BILOU tags" in note and "read as BIO" in note for note in splits.notes), splits.notes


def test_transformers_jsonl_with_ner_tag_ids_and_their_names(tmp_path):
    ids = [HF_CONLL_TAGS.index(t) for t in BIO]
    record = {"id": "0", "tokens": WORDS, "pos_tags": [22] * 9, "chunk_tags": [11] * 9, "ner_tags": ids}
    for split in ("train", "validation"):
        (tmp_path / f"{split}.jsonl").write_text(json.dumps(record) + "\n" + json.dumps(
            {**record, "id": "1", "ner_tags": BIO}) + "\n")  # names work too
    (tmp_path / "tags.txt").write_text("\n".join(HF_CONLL_TAGS) + "\n")
    splits = load_data(tmp_path)  # `validation` is the dev split
    assert [list(ex.tags) for ex in splits.train] == [BIO, BIO] and len(splits.dev) == 2


def test_tag_ids_without_their_names_are_one_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"tokens": WORDS, "ner_tags": [HF_CONLL_TAGS.index(t) for t in BIO]}) + "\n")
    with pytest.raises(UserError, match=r"train.jsonl:1: tag id 3: give the tag names in id order in tags.txt"):
        load_data(path)
    (tmp_path / "tags.txt").write_text("O\nB-ORG\n")
    with pytest.raises(UserError, match=r"train.jsonl:1: tag id 3 is not an index 0-1 of tags.txt"):
        load_data(path)


def test_transformers_jsonl_for_text_classification(tmp_path):
    for split in ("train", "validation"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps({"text": t, "label": i}) + "\n" for i, t in
                                                         enumerate(["Wall St. bears claw back", "Fed raises rates"])))
    (tmp_path / "classes.txt").write_text("business\nworld\n")
    assert [ex.label for ex in load_data(tmp_path).train] == ["business", "world"]


def test_tab_separated_columns_and_tab_separated_text_label(tmp_path):
    ner = tmp_path / "ner"
    ner.mkdir()
    for split in ("train", "dev"):
        (ner / f"{split}.tsv").write_text("\n".join(f"{w}\t{t}" for w, t in zip(WORDS, BIO)) + "\n")
    assert list(load_data(ner).train[0].tags) == BIO
    topic = tmp_path / "topic"
    topic.mkdir()
    for split in ("train", "dev"):
        (topic / f"{split}.tsv").write_text("text\tlabel\nWall St. bears claw back\tbusiness\nA goal in the "
                                            "last minute\tsports\n")
    splits = load_data(topic)
    assert [(" ".join(ex.words), ex.label) for ex in splits.train] == [("Wall St. bears claw back", "business"),
                                                                       ("A goal in the last minute", "sports")]


def test_a_tag_of_no_scheme_is_still_refused(tmp_path):
    conll(tmp_path / "train.txt", [(["Paris"], ["X-LOC"])])
    with pytest.raises(UserError, match=r"tag 'X-LOC' is not O, B-TYPE or I-TYPE \(nor BIOES/BILOU's "):
        load_data(tmp_path / "train.txt")


# --- CSV columns chosen by their header (--text-column, --label-column) --------------------------------------

INTENTS = "sentence,intent\nbook a table for two,restaurant\nplay some jazz,music\n"


def table(folder, content, ext="csv"):
    folder.mkdir(exist_ok=True)
    for split in ("train", "dev"):
        (folder / f"{split}.{ext}").write_text(content, encoding="utf-8")
    return folder


def read(folder, columns=None):
    return [(" ".join(ex.words), ex.label) for ex in load_data(folder, columns).train]


def test_a_text_label_header_is_read_as_a_header_not_a_sentence(tmp_path):
    assert read(table(tmp_path / "d", "text,label\nbook a table,restaurant\nplay jazz,music\n")) == [
        ("book a table", "restaurant"), ("play jazz", "music")]


def test_a_header_of_other_names_is_refused_with_the_flags_that_select_columns(tmp_path):
    with pytest.raises(UserError) as caught:
        load_data(table(tmp_path / "d", INTENTS))
    assert str(caught.value) == (f"{tmp_path / 'd' / 'train.csv'}:1: the header is 'sentence,intent': name the "
                                 "columns text,label, or select them with --text-column NAME --label-column NAME")


def test_the_flags_read_a_header_of_other_names_and_no_fifth_class_appears(tmp_path):
    assert read(table(tmp_path / "d", INTENTS), ("sentence", "intent")) == [
        ("book a table for two", "restaurant"), ("play some jazz", "music")]


def test_columns_other_than_the_selected_ones_are_ignored(tmp_path):
    content = "id,Intent,source,Sentence\n1,restaurant,web,book a table\n2,music,app,\"play jazz, loud\"\n"
    assert read(table(tmp_path / "d", content), ("sentence", "intent")) == [
        ("book a table", "restaurant"), ("play jazz, loud", "music")]


def test_a_label_column_alone_reads_the_text_column_named_text(tmp_path):
    assert read(table(tmp_path / "d", "intent,text\nmusic,play jazz\nrestaurant,book a table\n"), (None, "intent")) \
        == [("play jazz", "music"), ("book a table", "restaurant")]


@pytest.mark.parametrize("columns, missing, given", [
    (("utterance", "intent"), "'utterance'", "--text-column 'utterance'"),
    (("sentence", None), "'label'", "no --label-column, so 'label'"),
])
def test_a_column_missing_from_the_header_names_the_file_the_header_and_the_column(tmp_path, columns, missing, given):
    with pytest.raises(UserError) as caught:
        load_data(table(tmp_path / "d", INTENTS), columns)
    assert str(caught.value) == (f"{tmp_path / 'd' / 'train.csv'}:1: the header 'sentence,intent' has no column "
                                 f"{missing} ({given})")


def test_a_row_with_fewer_fields_than_the_header_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"train.csv:3: expected 2 fields \(as many as the header\), found 1"):
        load_data(table(tmp_path / "d", "sentence,intent\nplay jazz,music\nbook a table\n"), ("sentence", "intent"))


def test_tab_separated_rows_are_selected_by_their_header_too(tmp_path):
    content = "id\tsentence\tintent\n1\tbook a table, please\trestaurant\n2\tplay jazz\tmusic\n"
    with pytest.raises(UserError, match=re.escape(r"the header is 'id\tsentence\tintent': name the columns")):
        load_data(table(tmp_path / "d", content, "tsv"))
    assert read(tmp_path / "d", ("sentence", "intent")) == [("book a table, please", "restaurant"),
                                                            ("play jazz", "music")]


def test_a_column_flag_where_no_table_is_read_changes_nothing_and_is_refused(tmp_path):
    folder = tmp_path / "ner"
    folder.mkdir()
    for split in ("train", "dev"):
        conll(folder / f"{split}.txt", [(WORDS, BIO)])
    with pytest.raises(UserError, match=r"^--text-column selects a column of a CSV file's header, and no --data is "
                                        r"read as CSV .*: it would change nothing$"):
        load_sources([folder], "sentence")
    both = load_sources([folder, table(tmp_path / "intents", INTENTS)], "sentence", "intent")
    assert [ex.label for ex in both[1].splits.train] == ["restaurant", "music"]
