import dataclasses
import json

import pytest

from conftest import SHARED_DATA
from minimtl.model import IGNORE_INDEX
from minimtl.machinery.data import Example, LabelVocab, load_data, unknown_labels
from minimtl.guards.errors import UserError


def write(root, files):
    """Write {relative path: str or bytes} under root."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")


DEV_CONLL = {"dev.txt": "Paris B-LOC\n"}
DEV_JSONL = {"dev.jsonl": '{"tokens": ["hi"], "tags": ["O"], "label": "greet"}\n'}
SNIPS_DEV = {"dev/seq.in": "hi\n", "dev/seq.out": "O\n", "dev/label": "greet\n"}

# (id, files, what to load, expected "path:line" location (None: the loaded path itself), message fragment)
BAD = [
    ("conll one column", {"train.txt": "EU B-ORG\nrejects\n", **DEV_CONLL}, ".", "train.txt:2", "only 'rejects'"),
    ("conll bad tag", {"train.txt": "EU B-ORG\n\nx O\nGerman X-MISC\n", **DEV_CONLL}, ".", "train.txt:4", "'X-MISC'"),
    ("conll bare B", {"train.txt": "EU B\n", **DEV_CONLL}, ".", "train.txt:1", "'B' is not O"),
    ("conll no sentences", {"train.txt": "-DOCSTART- O\n\n", **DEV_CONLL}, ".", "train.txt", "no sentences"),
    ("empty file", {"train.txt": "", **DEV_CONLL}, ".", "train.txt", "file is empty"),
    ("blank file", {"train.txt": "\ufeff \r\n\n", **DEV_CONLL}, ".", "train.txt", "file is empty"),
    ("bad utf-8", {"train.txt": b"EU B-ORG\n\nM\xfcnchen B-LOC\n", **DEV_CONLL}, ".", "train.txt:3", "UTF-8"),
    ("snips tag count", {"train/seq.in": "a b\nc d\n", "train/seq.out": "O O\nO\n", "train/label": "x\ny\n",
                         **SNIPS_DEV}, ".", "train/seq.out:2", "1 tags for the 2 words"),
    ("snips short label", {"train/seq.in": "a\nb\nc\n", "train/seq.out": "O\nO\nO\n", "train/label": "x\ny\n",
                           **SNIPS_DEV}, ".", "train/label:3", "has 2 lines but seq.in has 3"),
    ("snips blank line", {"train/seq.in": "a\n\nb\n", "train/seq.out": "O\n\nO\n", "train/label": "x\ny\nz\n",
                          **SNIPS_DEV}, ".", "train/seq.in:2", "empty sentence"),
    ("snips bad tag", {"train/seq.in": "a b\n", "train/seq.out": "O B_x\n", "train/label": "x\n", **SNIPS_DEV},
     ".", "train/seq.out:1", "'B_x'"),
    ("snips missing label file", {"train/seq.in": "a\n", "train/seq.out": "O\n", **SNIPS_DEV}, ".", "train/label",
     "cannot read"),
    ("no dev split", {"train.txt": "EU B-ORG\n"}, ".", None, "no dev split"),
    ("no train split", {"dev.txt": "EU B-ORG\n", "test.txt": "EU B-ORG\n"}, ".", None, "no train split"),
    ("two train splits", {"train.txt": "a O\n", "train.csv": "a,x\n", **DEV_CONLL}, ".", None, "more than one"),
    ("missing path", {}, "nowhere", None, "no such file"),
    ("unknown extension", {"data.json": "[]"}, "data.json", None, "unknown data format"),
    ("single sentence file", {"data.txt": "a O\n"}, "data.txt", None, "at least 2 sentences"),
    ("split fields differ", {"train.jsonl": '{"tokens": ["a"], "tags": ["O"], "label": "x"}\n',
                             "dev.jsonl": '{"tokens": ["a"], "tags": ["O"]}\n'}, ".", "dev.jsonl",
     "has tags but the train split has tags and labels"),
    ("json not object", {"train.jsonl": '{"text": "a b", "label": "x"}\n[1, 2]\n', **DEV_JSONL}, ".",
     "train.jsonl:2", "JSON object, found list"),
    ("json invalid", {"train.jsonl": '\n{"text": "a b", "label": "x"\n', **DEV_JSONL}, ".", "train.jsonl:2",
     "not valid JSON"),
    ("json no words", {"train.jsonl": '{"label": "x"}\n', **DEV_JSONL}, ".", "train.jsonl:1", "needs 'tokens'"),
    ("json nothing to learn", {"train.jsonl": '{"tokens": ["a"]}\n', **DEV_JSONL}, ".", "train.jsonl:1",
     "needs 'tags', 'label' or both"),
    ("json keys change", {"train.jsonl": '{"text": "a", "label": "x"}\n{"text": "b"}\n', **DEV_JSONL}, ".",
     "train.jsonl:2", "line 1 has"),
    ("json tag count", {"train.jsonl": '{"tokens": ["a", "b"], "tags": ["O"]}\n', **DEV_JSONL}, ".",
     "train.jsonl:1", "list of 2 strings"),
    ("json bad tag", {"train.jsonl": '{"tokens": ["a"], "tags": ["I"]}\n', **DEV_JSONL}, ".", "train.jsonl:1",
     "'I' is not O"),
    ("json text with tags", {"train.jsonl": '{"text": "a", "tags": ["O"]}\n', **DEV_JSONL}, ".", "train.jsonl:1",
     "required with 'tags'"),
    ("json blank token", {"train.jsonl": '{"tokens": ["a", " "], "label": "x"}\n', **DEV_JSONL}, ".",
     "train.jsonl:1", "non-blank strings"),
    ("json null label", {"train.jsonl": '{"text": "a", "label": null}\n', **DEV_JSONL}, ".", "train.jsonl:1",
     "string or an integer"),
    ("csv label not in classes", {"classes.txt": "neg\npos\n", "train.csv": "text,label\ngood,1\nbad,2\n",
                                  "dev.csv": "ok,0\n"}, ".", "train.csv:3", "index 0-1"),
    ("csv field count", {"train.csv": '"a, b",x\nc,d,y\n', "dev.csv": "ok,x\n"}, ".", "train.csv:2",
     "found 3"),
    ("csv error after multiline field", {"train.csv": '"two\nlines",x\n"three\n\nlines"\n', "dev.csv": "ok,x\n"},
     ".", "train.csv:3", "found 1"),
    ("csv empty text", {"train.csv": "a,x\n ,y\n", "dev.csv": "ok,x\n"}, ".", "train.csv:2", "empty text"),
    ("csv only header", {"train.csv": "text,label\n", "dev.csv": "ok,x\n"}, ".", "train.csv", "no sentences"),
    ("csv header sentence,intent", {"train.csv": "sentence,intent\nbook a table,restaurant\n", "dev.csv": "ok,x\n"},
     ".", "train.csv:1", "the header is 'sentence,intent': name the columns text,label"),
    ("csv header Sentence,Label", {"train.csv": "a,x\n", "dev.csv": "Sentence,Label\nok,x\n"}, ".", "dev.csv:1",
     "the header is 'Sentence,Label'"),
    ("classes listed twice", {"classes.txt": "neg\npos\nneg\n", "train.csv": "a,0\n", "dev.csv": "b,1\n"}, ".",
     "classes.txt:3", "listed twice"),
]


@pytest.mark.parametrize("files, target, where, fragment", [case[1:] for case in BAD], ids=[c[0] for c in BAD])
def test_bad_input_names_file_and_line(tmp_path, files, target, where, fragment):
    write(tmp_path, files)
    with pytest.raises(UserError) as caught:
        load_data(tmp_path / target)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / (where or target)}: ")
    assert fragment in message
    assert "\n" not in message


EXAMPLES = [
    Example(("Peter", "Blackburn", "visits", "New", "York"), ("B-PER", "I-PER", "O", "B-LOC", "I-LOC"), "travel"),
    Example(("clásicos", ",", "quoted", '"words"'), ("B-album", "O", "O", "O"), "music"),
    Example(("no", "entities"), ("O", "O"), "travel"),
]


def as_conll(examples):
    return "-DOCSTART- -X- O\n\n" + "".join(
        "".join(f"{w} NN {t}\n" for w, t in zip(ex.words, ex.tags)) + "\n" for ex in examples)


def as_jsonl(examples, tags=True, label=True):
    rows = ({"tokens": list(ex.words), **({"tags": list(ex.tags)} if tags else {}),
             **({"label": ex.label} if label else {})} for ex in examples)
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def as_csv(examples):
    quote = '"{}"'.format
    return "text,label\n" + "".join(f"{quote(' '.join(ex.words).replace(chr(34), 2 * chr(34)))},{ex.label}\n"
                                    for ex in examples)


def as_snips(split, examples):
    return {f"{split}/seq.in": "".join(" ".join(ex.words) + " \n" for ex in examples),
            f"{split}/seq.out": "".join(" ".join(ex.tags) + " \n" for ex in examples),
            f"{split}/label": "".join(ex.label + "\n" for ex in examples)}


def strip(examples, tags=True, label=True):
    return [Example(ex.words, ex.tags if tags else None, ex.label if label else None) for ex in examples]


def test_round_trip_snips(tmp_path):
    write(tmp_path, {**as_snips("train", EXAMPLES), **as_snips("dev", EXAMPLES[:1]), **as_snips("test", EXAMPLES)})
    splits = load_data(tmp_path)
    assert (splits.train, splits.dev, splits.test) == (EXAMPLES, EXAMPLES[:1], EXAMPLES)
    assert splits.has_tags and splits.has_labels
    assert splits.source == f"ATIS/SNIPS folders in {tmp_path}"


def test_round_trip_conll_without_test_and_valid_name(tmp_path):
    write(tmp_path, {"train.conll": as_conll(EXAMPLES), "valid.conll": as_conll(EXAMPLES[1:])})
    splits = load_data(tmp_path)
    in_document = lambda examples: [dataclasses.replace(ex, document=0) for ex in strip(examples, label=False)]
    assert (splits.train, splits.dev, splits.test) == (in_document(EXAMPLES), in_document(EXAMPLES[1:]), None)
    assert splits.has_tags and not splits.has_labels


def test_conll_documents_survive_reading(tmp_path):
    """-DOCSTART- starts a document (the sentences before the first marker are document 0); a file without any
    marker has no documents; IOB1 conversion keeps them."""
    sentence = lambda word, tag="O": f"{word} NN {tag}\n\n"
    text = (sentence("lead") + "-DOCSTART- -X- O\n\n-DOCSTART- -X- O\n\n" + sentence("a") + sentence("b")
            + "-DOCSTART- -X- O\n" + sentence("c", "I-LOC") + "-DOCSTART- -X- O\n\n")
    write(tmp_path, {"train.txt": text, "dev.txt": sentence("x") + sentence("y")})
    splits = load_data(tmp_path)
    assert [(ex.words[0], ex.document) for ex in splits.train] == [("lead", 0), ("a", 1), ("b", 1), ("c", 2)]
    assert splits.train[-1].tags == ("B-LOC",)  # read as IOB1, converted, still in its document
    assert [ex.document for ex in splits.dev] == [None, None]


@pytest.mark.parametrize("tags, label", [(True, True), (True, False), (False, True)])
def test_round_trip_jsonl_tokens(tmp_path, tags, label):
    write(tmp_path, {f"{split}.jsonl": as_jsonl(EXAMPLES, tags, label) for split in ("train", "dev", "test")})
    splits = load_data(tmp_path)
    assert splits.train == splits.dev == splits.test == strip(EXAMPLES, tags, label)
    assert (splits.has_tags, splits.has_labels) == (tags, label)


def test_round_trip_jsonl_text_with_class_indices(tmp_path):
    write(tmp_path, {"classes.txt": "neg\npos\n",
                     "train.jsonl": '{"text": "so  bad", "label": 0}\n{"text": "good", "label": "pos"}\n',
                     "dev.jsonl": '{"text": "fine", "label": "1"}\n'})
    splits = load_data(tmp_path)
    assert splits.train == [Example(("so", "bad"), None, "neg"), Example(("good",), None, "pos")]
    assert splits.dev == [Example(("fine",), None, "pos")]


def test_round_trip_csv_with_quoted_commas(tmp_path):
    write(tmp_path, {name: as_csv(EXAMPLES) for name in ("train.csv", "dev.csv", "test.csv")})
    splits = load_data(tmp_path)
    assert splits.train == splits.dev == splits.test == strip(EXAMPLES, tags=False)
    assert splits.has_labels and not splits.has_tags


def test_csv_class_indices_and_multiline_text(tmp_path):
    write(tmp_path, {"classes.txt": "world\nsports\n", "train.csv": '"a, b\nc",1\nd,world\n', "dev.csv": "e,0\n"})
    splits = load_data(tmp_path)
    assert splits.train == [Example(("a,", "b", "c"), None, "sports"), Example(("d",), None, "world")]
    assert splits.dev == [Example(("e",), None, "world")]


@pytest.mark.parametrize("make", [
    lambda: {"train.txt": as_conll(EXAMPLES), "dev.txt": as_conll(EXAMPLES)},
    lambda: {"train.jsonl": as_jsonl(EXAMPLES), "dev.jsonl": as_jsonl(EXAMPLES)},
    lambda: {"train.csv": as_csv(EXAMPLES), "dev.csv": as_csv(EXAMPLES)},
    lambda: {**as_snips("train", EXAMPLES), **as_snips("dev", EXAMPLES)},
], ids=["conll", "jsonl", "csv", "snips"])
def test_bom_crlf_and_trailing_blank_lines_are_accepted(tmp_path, make):
    files = make()
    write(tmp_path / "plain", files)
    windows = {name: "\ufeff" + text.replace("\n", "\r\n") + "\r\n\r\n  \r\n" for name, text in files.items()}
    write(tmp_path / "windows", windows)
    plain, dos = load_data(tmp_path / "plain"), load_data(tmp_path / "windows")
    assert (dos.train, dos.dev) == (plain.train, plain.dev)


def test_single_file_holds_out_a_seeded_tenth_as_dev(tmp_path):
    examples = [Example((f"w{i}",), ("O",), f"c{i % 3}") for i in range(30)]
    write(tmp_path, {"all.jsonl": as_jsonl(examples)})
    splits = load_data(tmp_path / "all.jsonl")
    assert (len(splits.train), len(splits.dev), splits.test) == (27, 3, None)
    assert sorted(splits.train + splits.dev, key=examples.index) == examples
    assert splits.train == sorted(splits.train, key=examples.index)  # file order kept within each split
    assert load_data(tmp_path / "all.jsonl").dev == splits.dev
    assert "seeded 10% holdout" in splits.source


def test_label_vocab_comes_from_values_with_o_first():
    tags = LabelVocab.from_values(["I-PER", "O", "B-PER", "B-LOC", "O"])
    assert tags.names == ["O", "B-LOC", "B-PER", "I-PER"] and len(tags) == 4
    assert tags.id("O") == 0 and tags.id("B-PER") == 2 and tags.id("B-MISC") == IGNORE_INDEX
    assert LabelVocab.from_values(["b", "a", "b"]).names == ["a", "b"]


def test_unknown_labels_are_reported_once_per_split_and_kind(tmp_path):
    seen = [Example(("a",), ("B-x",), "one"), Example(("b",), ("O",), "two")]
    dev = [Example(("a", "b"), ("B-y", "I-y"), "three"), Example(("a",), ("B-y",), "three"), *seen]
    write(tmp_path, {"train.jsonl": as_jsonl(seen), "dev.jsonl": as_jsonl(dev), "test.jsonl": as_jsonl(seen)})
    splits = load_data(tmp_path)
    labels = LabelVocab.from_values(ex.label for ex in splits.train)
    tags = LabelVocab.from_values(tag for ex in splits.train for tag in ex.tags)
    assert unknown_labels(splits, labels, tags) == [
        "dev: 2 sentences have labels not seen in train (three x2): counted as wrong",
        "dev: 2 sentences have tags not seen in train (B-y x2, I-y x1): counted as wrong",
    ]
    assert unknown_labels(splits, None, None) == []


# --- the real benchmark sets -----------------------------------------------------------------------------

def real(name):
    if not (SHARED_DATA / name).exists():
        pytest.skip(f"{SHARED_DATA / name} not present")
    return load_data(SHARED_DATA / name)


def vocabs(splits):
    labels = LabelVocab.from_values(ex.label for ex in splits.train) if splits.has_labels else None
    tags = LabelVocab.from_values(tag for ex in splits.train for tag in ex.tags) if splits.has_tags else None
    return labels, tags


def test_snips():
    splits = real("snips")
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (13084, 700, 700)
    labels, tags = vocabs(splits)
    assert len(labels) == 7 and len(tags) == 72  # 'O' + 39 B- + 32 I- (7 slot types are always one word)
    assert unknown_labels(splits, labels, tags) == []
    assert splits.train[1].words[7] == "clásicos"


def test_conll2003():
    splits = real("conll2003")
    # The test file still has its 230 "-DOCSTART-" blocks (train/dev have none): 3683 blocks, 3453 sentences.
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (14041, 3250, 3453)
    assert not splits.has_labels
    _, tags = vocabs(splits)
    assert tags.names == ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC", "I-ORG", "I-PER"]
    assert sum(len(ex.words) for ex in splits.train) == 203621


def test_ag_news():
    splits = real("ag_news")
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (4000, 1000, 1000)
    labels, _ = vocabs(splits)
    assert labels.names == ["business", "sports", "tech", "world"]
    # The fixed subset: dev and test share no text with train, so dev can select the checkpoint honestly.
    train = {ex.words for ex in splits.train}
    assert not train & {ex.words for ex in splits.dev} and not train & {ex.words for ex in splits.test}
