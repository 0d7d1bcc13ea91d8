"""Datasets: read the usual joint, NER and classification file formats into one shape, and check them.

Every example is a list of words with optional string tags (one per word) and an optional string label, so
nothing after this module cares which format the data came from. Labels and tags stay strings until a
`LabelVocab` built from the training split turns them into ids; a name seen only in dev/test then has no id,
which is honest: the model can never predict it, so metrics (which compare strings) count it as wrong.

Anything wrong in a file is a `UserError` naming the file and line: a model trained on silently misread data
is the most expensive bug there is, and "seq.out:412: 9 tags for 8 words" is fixed in a minute.

Formats (`load_data` picks one by folder layout and file extension):
  joint    ATIS/SNIPS folders {train,dev,test}/{seq.in,seq.out,label}, line-aligned;
           JSON lines {"tokens": [...], "tags": [...], "label": "..."} (tags or label may be left out)
  NER      CoNLL columns: "word ... TAG" per line, blank line between sentences, -DOCSTART- skipped
  classify CSV text,label (label a name, or an index into a classes.txt beside it; optional header row);
           JSON lines {"text": "...", "label": ...}
Raw text is split on whitespace only: BERT's pre-tokenizer splits off punctuation itself later.
"""

import csv
import io
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..bio import split_tag
from ..model import IGNORE_INDEX
from ..errors import UserError

HOLDOUT_FRACTION = 0.1  # a single file is a train split: this much of it, chosen with a fixed seed, is dev
HOLDOUT_SEED = 0


@dataclass(frozen=True)
class Example:
    words: tuple[str, ...]
    tags: tuple[str, ...] | None = None  # one BIO tag per word, or None for classification-only data
    label: str | None = None  # the sentence label, or None for NER-only data


@dataclass
class Splits:
    train: list[Example]
    dev: list[Example]
    test: list[Example] | None  # None when the data has no test split
    source: str  # what was read, e.g. "CoNLL columns in data/conll2003", for logs

    # Every example in every split has the same fields (load_data checks), so the first one speaks for all.
    @property
    def has_tags(self):
        return self.train[0].tags is not None

    @property
    def has_labels(self):
        return self.train[0].label is not None


class LabelVocab:
    """Label or tag names <-> ids. Built from the training split only: dev/test must not decide the head size."""

    def __init__(self, names):
        self.names = list(names)
        self._ids = {name: i for i, name in enumerate(self.names)}

    @classmethod
    def from_values(cls, values):
        """'O' first (so id 0 always means "no entity"), then sorted, so the same data always gives the same ids."""
        seen = set(values)
        return cls((["O"] if "O" in seen else []) + sorted(seen - {"O"}))

    def id(self, name):
        """The id of `name`, or IGNORE_INDEX for a name never seen in training."""
        return self._ids.get(name, IGNORE_INDEX)

    def __len__(self):
        return len(self.names)


def load_data(path):
    """Read a data folder (train + dev, optional test) or a single file (train; dev is a seeded 10% holdout)."""
    path = Path(path)
    if not path.exists():
        raise UserError("no such file or directory", path)
    if not path.is_dir():
        examples, name = _read(path)
        if len(examples) < 2:
            raise UserError("a single file needs at least 2 sentences, to hold one out as dev", path)
        order = list(range(len(examples)))
        random.Random(HOLDOUT_SEED).shuffle(order)
        held_out = set(order[: max(1, round(len(examples) * HOLDOUT_FRACTION))])
        train = [ex for i, ex in enumerate(examples) if i not in held_out]
        dev = [ex for i, ex in enumerate(examples) if i in held_out]
        return Splits(train, dev, None, f"{name} in {path} (dev: seeded {HOLDOUT_FRACTION:.0%} holdout)")
    files = {split: _find_split(path, split) for split in ("train", "dev", "test")}
    for split in ("train", "dev"):
        if files[split] is None:
            raise UserError(f"no {split} split: expected a {split}.txt/.conll/.csv/.jsonl file or a {split}/ "
                            "folder holding seq.in, seq.out and label", path)
    read = {split: _read(file) for split, file in files.items() if file is not None}
    (train, name), (dev, _) = read["train"], read["dev"]
    for split, (examples, _) in read.items():
        if _fields(examples) != _fields(train):
            raise UserError(f"has {_fields(examples)} but the train split has {_fields(train)}", files[split])
    return Splits(train, dev, read["test"][0] if "test" in read else None, f"{name} in {path}")


def load_split(path, split=None):
    """(examples, description) of one split to evaluate: a data file read whole, an ATIS/SNIPS split folder
    (seq.in, seq.out, label), or the `split` (default test) of a data folder, which unlike training needs
    no other split."""
    path = Path(path)
    if not path.exists():
        raise UserError("no such file or directory", path)
    if not path.is_dir() or (path / "seq.in").exists():
        if split is not None:
            raise UserError(f"--split {split}: this is one split, read whole (--split picks one of a data folder)",
                            path)
    else:
        split = split or "test"
        found = _find_split(path, split)
        if found is None:
            raise UserError(f"no {split} split: expected a {split}.txt/.conll/.csv/.jsonl file or a {split}/ "
                            "folder holding seq.in, seq.out and label", path)
        path = found
    examples, name = _read(path)
    return examples, f"{name} in {path}"


def unknown_labels(splits, label_vocab, tag_vocab):
    """One line per dev/test split and kind (labels, tags) holding names the training split never has."""
    return [f"{split}: {message}" for split, examples in (("dev", splits.dev), ("test", splits.test or []))
            for message in unseen(examples, label_vocab, tag_vocab)]


def unseen(examples, label_vocab, tag_vocab):
    """One line per kind (labels, tags) of which some names in `examples` have no id in the vocabulary."""
    messages = []
    for kind, vocab in (("labels", label_vocab), ("tags", tag_vocab)):
        if vocab is None:
            continue
        counts, hit = Counter(), 0
        for ex in examples:
            missing = [v for v in ((ex.label,) if kind == "labels" else ex.tags) if vocab.id(v) == IGNORE_INDEX]
            counts.update(missing)
            hit += bool(missing)
        if hit:
            shown = ", ".join(f"{name} x{n}" for name, n in counts.most_common(5)) + ", ..." * (len(counts) > 5)
            have = "sentence has" if hit == 1 else "sentences have"
            messages.append(f"{hit} {have} {kind} not seen in train ({shown}): counted as wrong")
    return messages


# --- finding splits -------------------------------------------------------------------------------------

def _find_split(folder, split):
    """The one file (or ATIS/SNIPS folder) holding a split, or None."""
    names = ("dev", "valid") if split == "dev" else (split,)
    found = [folder / name for name in names if (folder / name).is_dir()]
    found += [folder / (name + ext) for name in names for ext in FORMATS if (folder / (name + ext)).is_file()]
    if len(found) > 1:
        raise UserError(f"more than one {split} split ({', '.join(p.name for p in found)}): keep one", folder)
    return found[0] if found else None


def _read(path):
    """(examples, format name) of one split's file or ATIS/SNIPS folder."""
    if path.is_dir():
        name, reader = "ATIS/SNIPS folders", _read_seq_folder
    elif path.suffix.lower() in FORMATS:
        name, reader = FORMATS[path.suffix.lower()]
    else:
        raise UserError("unknown data format: expected .txt/.conll (CoNLL), .csv or .jsonl", path)
    examples = reader(path)
    if not examples:
        raise UserError("no sentences in this file", path)
    return examples, name


def _fields(examples):
    return " and ".join(field for field, present in (
        ("tags", examples[0].tags is not None), ("labels", examples[0].label is not None)) if present)


# --- reading text ----------------------------------------------------------------------------------------

def _read_text(path):
    """The whole file as a string, without a UTF-8 byte-order mark."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read ({e.strerror})", path) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise UserError(f"not valid UTF-8 (byte 0x{raw[e.start]:02x}): save the file as UTF-8", path, line) from None
    if not text.strip():
        raise UserError("file is empty", path)
    return text


def _lines(path):
    """Lines without their LF, CRLF or (old Mac) CR ending, trailing blank lines dropped. (Not str.splitlines:
    that also splits inside a sentence at characters like U+2028 or U+0085, which would misalign files.)"""
    lines = _read_text(path).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    while not lines[-1].strip():
        lines.pop()
    return lines


def _tag(tag, path, line):
    try:
        split_tag(tag)
    except ValueError as e:
        raise UserError(e, path, line) from None
    return tag


def _label(value, classes, path, line):
    """A label as written (a name, or an integer index into classes.txt when there is one) -> its name."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise UserError(f"a label must be a string or an integer, not {value!r}", path, line)
    name = str(value).strip()
    if not name:
        raise UserError("empty label", path, line)
    if classes is None or name in classes:
        return name
    if name.isdigit() and int(name) < len(classes):
        return classes[int(name)]
    raise UserError(f"label {name!r} is neither a name in classes.txt nor an index 0-{len(classes) - 1}", path, line)


def _read_classes(path):
    """classes.txt beside a CSV/JSONL file: label names in index order, or None when there is no such file."""
    if not path.is_file():
        return None
    classes = []
    for i, line in enumerate(_lines(path), 1):
        name = line.strip()
        if not name or name in classes:
            raise UserError("blank line in a classes file" if not name else f"class {name!r} listed twice", path, i)
        classes.append(name)
    return classes


# --- the formats -----------------------------------------------------------------------------------------

def _read_seq_folder(folder):
    """ATIS/SNIPS: line i of seq.in (words), seq.out (tags) and label is sentence i."""
    files = [folder / "seq.in", folder / "seq.out", folder / "label"]
    sentences, tag_lines, labels = (_lines(file) for file in files)
    for file, lines in zip(files[1:], (tag_lines, labels)):
        if len(lines) != len(sentences):
            raise UserError(f"has {len(lines)} lines but seq.in has {len(sentences)}", file,
                            min(len(lines), len(sentences)) + 1)
    examples = []
    for i, (sentence, tag_line, label) in enumerate(zip(sentences, tag_lines, labels), 1):
        words, tags = tuple(sentence.split()), tag_line.split()
        if not words:
            raise UserError("empty sentence", files[0], i)
        if len(tags) != len(words):
            raise UserError(f"{len(tags)} tags for the {len(words)} words of seq.in", files[1], i)
        tags = tuple(_tag(tag, files[1], i) for tag in tags)
        examples.append(Example(words, tags, _label(label, None, files[2], i)))
    return examples


def _read_conll(path):
    examples, sentence = [], []
    for i, line in enumerate(_lines(path) + [""], 1):  # the extra blank line ends the last sentence
        columns = line.split()
        if columns and columns[0] != "-DOCSTART-":
            if len(columns) < 2:
                raise UserError(f"expected 'word ... TAG' columns, found only {columns[0]!r}", path, i)
            sentence.append((columns[0], _tag(columns[-1], path, i)))
        elif sentence:  # a blank line or a document marker ends a sentence
            words, tags = zip(*sentence)
            examples.append(Example(words, tags))
            sentence = []
    return examples


def _read_csv(path):
    classes = _read_classes(path.parent / "classes.txt")
    rows = csv.reader(io.StringIO(_read_text(path), newline=""))
    examples, next_line = [], 1
    try:
        for row in rows:
            # A quoted field may span lines: report the line the record starts on.
            line, next_line = next_line, rows.line_num + 1
            if not any(field.strip() for field in row):
                continue
            if not examples and [field.strip().lower() for field in row] == ["text", "label"]:
                continue  # header row
            if len(row) != 2:
                raise UserError(f"expected 2 fields (text,label), found {len(row)}: quote a text that has commas",
                                path, line)
            words = tuple(row[0].split())
            if not words:
                raise UserError("empty text", path, line)
            examples.append(Example(words, None, _label(row[1], classes, path, line)))
    except csv.Error as e:
        raise UserError(f"malformed CSV ({e})", path, rows.line_num) from None
    return examples


def _read_jsonl(path):
    classes = _read_classes(path.parent / "classes.txt")
    examples, first = [], None
    for i, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"not valid JSON ({e.msg}, column {e.colno})", path, i) from None
        if not isinstance(record, dict):
            raise UserError(f"expected a JSON object, found {type(record).__name__}", path, i)
        keys = [key for key in ("tokens", "text", "tags", "label") if key in record]
        if first is None:
            first = (i, keys)
        if keys != first[1]:
            raise UserError(f"has keys {keys} but line {first[0]} has {first[1]}: every line needs the same", path, i)
        examples.append(_json_example(record, classes, path, i))
    return examples


def _json_example(record, classes, path, line):
    if "tokens" in record:
        words = record["tokens"]
        if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
            raise UserError("'tokens' must be a list of non-blank strings", path, line)
    elif "tags" in record or not isinstance(record.get("text"), str):
        raise UserError("a JSON line needs 'tokens' (a list of words; required with 'tags') or 'text' (a string)",
                        path, line)
    else:
        words = record["text"].split()
    if not words:
        raise UserError("no words", path, line)
    if "tags" not in record and "label" not in record:
        raise UserError("a JSON line needs 'tags', 'label' or both", path, line)
    tags = record.get("tags")
    if "tags" in record:
        if not isinstance(tags, list) or len(tags) != len(words) or not all(isinstance(t, str) for t in tags):
            raise UserError(f"'tags' must be a list of {len(words)} strings, one per token", path, line)
        tags = tuple(_tag(tag, path, line) for tag in tags)
    label = _label(record["label"], classes, path, line) if "label" in record else None
    return Example(tuple(words), tags, label)


# file extension -> (format name for logs, reader)
FORMATS = {".txt": ("CoNLL columns", _read_conll), ".conll": ("CoNLL columns", _read_conll),
           ".csv": ("CSV text,label", _read_csv), ".jsonl": ("JSON lines", _read_jsonl)}
