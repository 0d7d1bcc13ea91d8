"""The data people have (issue 38): BIOES / BILOU tags, transformers-style JSON lines, a `validation` split,
tab-separated files. Each read from a sample written as those tools write it, and read as the same entities."""

import json

import pytest

from minimtl.bio import chunks
from minimtl.guards.errors import UserError
from minimtl.machinery.data import load_data

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
