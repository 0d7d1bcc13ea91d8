"""Datasets: read the usual joint, NER and classification file formats into one shape, and check them.

Every example is a list of words with optional string tags (one per word) and an optional string label, so
nothing after this module cares which format the data came from. Labels and tags stay strings until a
`LabelVocab` built from the training split turns them into ids; a name seen only in dev/test then has no id,
which is honest: the model can never predict it, so metrics (which compare strings) count it as wrong.

Anything wrong in a file is a `UserError` naming the file and line: a model trained on silently misread data
is the most expensive bug there is, and "seq.out:412: 9 tags for 8 words" is fixed in a minute.

Formats (`load_data` picks one by folder layout and file extension; machinery/formats.py reads each):
  joint    ATIS/SNIPS folders {train,dev,test}/{seq.in,seq.out,label}, line-aligned;
           JSON lines {"tokens": [...], "tags": [...], "label": "..."} (tags or label may be left out)
  NER      CoNLL columns: "word ... TAG" per line, blank line between sentences, -DOCSTART- starting a
           document (each sentence keeps its document's number, for --context)
  classify CSV text,label (label a name, or an index into a classes.txt beside it; an optional text,label
           header row, any other header of column names refused unless --text-column / --label-column
           name the columns to read, which then need a header);
           JSON lines {"text": "...", "label": ...}
Raw text is split on whitespace only: BERT's pre-tokenizer splits off punctuation itself later.
"""

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..model import IGNORE_INDEX
from ..guards.errors import UserError
from .formats import FORMATS, Example, read_file, read_seq_folder
from .tag_schemes import as_bio, from_bioes

HOLDOUT_FRACTION = 0.1  # a single file is a train split: this much of it, chosen with a fixed seed, is dev
HOLDOUT_SEED = 0


@dataclass
class Splits:
    train: list[Example]
    dev: list[Example]
    test: list[Example] | None  # None when the data has no test split
    source: str  # what was read, e.g. "CoNLL columns in data/conll2003", for logs
    notes: list[str] = field(default_factory=list)  # what reading changed, e.g. IOB1 tags read as BIO, for logs
    tables: bool = False  # a split was read from CSV or tab-separated text,label rows (--text-column selects in them)

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


def load_data(path, columns=None):
    """Read a data folder (train + dev, optional test) or a single file (train; dev is a seeded 10% holdout).
    `columns`: (text, label) column names that CSV headers must have (formats.read_file)."""
    path = Path(path)
    if not path.exists():
        raise UserError("no such file or directory", path)
    if not path.is_dir():
        examples, name, rewritten, table = _read(path, columns)
        if len(examples) < 2:
            raise UserError("a single file needs at least 2 sentences, to hold one out as dev", path)
        order = list(range(len(examples)))
        random.Random(HOLDOUT_SEED).shuffle(order)
        held_out = set(order[: max(1, round(len(examples) * HOLDOUT_FRACTION))])
        train = [ex for i, ex in enumerate(examples) if i not in held_out]
        dev = [ex for i, ex in enumerate(examples) if i in held_out]
        return Splits(train, dev, None, f"{name} in {path} (dev: seeded {HOLDOUT_FRACTION:.0%} holdout)",
                      _bio_notes({path: rewritten}), table)
    files = {split: _find_split(path, split) for split in ("train", "dev", "test")}
    for split in ("train", "dev"):
        if files[split] is None:
            raise UserError(f"no {split} split: expected a {split}.txt/.conll/.csv/.jsonl file or a {split}/ "
                            "folder holding seq.in, seq.out and label", path)
    read = {split: _read(file, columns) for split, file in files.items() if file is not None}
    (train, name, _, _), dev = read["train"], read["dev"][0]
    for split, (examples, *_) in read.items():
        if _fields(examples) != _fields(train):
            raise UserError(f"has {_fields(examples)} but the train split has {_fields(train)}", files[split])
    return Splits(train, dev, read["test"][0] if "test" in read else None, f"{name} in {path}",
                  _bio_notes({files[split].name: rewritten for split, (_, _, rewritten, _) in read.items()}),
                  any(table for *_, table in read.values()))


def load_split(path, split=None, columns=None):
    """(examples, description) of one split to evaluate: a data file read whole, an ATIS/SNIPS split folder
    (seq.in, seq.out, label), or the `split` (default test) of a data folder, which unlike training needs
    no other split. `columns`: as for load_data, and refused when the split is no CSV or text,label table."""
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
    examples, name, (iob1, openers, bioes), table = _read(path, columns)
    if columns is not None and not table:
        raise UserError(f"--{'text' if columns[0] else 'label'}-column selects a column of a CSV file's header: "
                        f"this is {name}", path)
    description = f"{name} in {path}"
    if bioes:
        description += f" ({bioes} BIOES/BILOU tags, read as BIO)"
    if iob1:
        description += " (IOB1 tags, read as BIO)"
    elif openers:
        description += f" ({openers} entities opened with I-, read as B-)"
    return examples, description


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
    names = ("dev", "valid", "validation") if split == "dev" else (split,)
    found = [folder / name for name in names if (folder / name).is_dir()]
    found += [folder / (name + ext) for name in names for ext in FORMATS if (folder / (name + ext)).is_file()]
    if len(found) > 1:
        raise UserError(f"more than one {split} split ({', '.join(p.name for p in found)}): keep one", folder)
    return found[0] if found else None


def _read(path, columns=None):
    """(examples, format name, (IOB1?, entities opened with I-, BIOES/BILOU tags), read as a table?) of one split's
    file or ATIS/SNIPS folder, in BIO with every entity opened by B- (tag_schemes.from_bioes, tag_schemes.as_bio)."""
    if path.is_dir():
        examples, name, table = read_seq_folder(path), "ATIS/SNIPS folders", False
    elif path.suffix.lower() in FORMATS:
        examples, name, table = read_file(path, columns)
    else:
        raise UserError("unknown data format: expected .txt/.conll/.tsv (CoNLL), .csv or .jsonl", path)
    if not examples:
        raise UserError("no sentences in this file", path)
    examples, bioes = from_bioes(examples)
    examples, iob1, openers = as_bio(examples)
    return examples, name, (iob1 and not bioes, openers, bioes), table


def _bio_notes(rewritten):
    """The log lines saying which files' tags were rewritten: {file: (IOB1?, entities opened with I-, BIOES/BILOU
    tags)}. One line for the IOB1 files, one for the BIOES/BILOU files; one per BIO file with stray I- openers,
    which are rare and worth counting."""
    iob1 = [str(file) for file, (was_iob1, _, _) in rewritten.items() if was_iob1]
    bioes = [str(file) for file, (_, _, n) in rewritten.items() if n]
    notes = [f"{', '.join(iob1)}: IOB1 tags (entities open with I-, as in the original CoNLL-2003 release), "
             "read as BIO"] if iob1 else []
    notes += [f"{', '.join(bioes)}: BIOES/BILOU tags (S-/U- a one-word entity, E-/L- its last word), read as "
              "BIO (S-, U- as B-; E-, L- as I-)"] if bioes else []
    return notes + [f"{file}: {openers} entities open with I- after O or another type; read as B-, which is how "
                    "seqeval reads them (the entities do not change)"
                    for file, (was_iob1, openers, n) in rewritten.items() if openers and not was_iob1 and not n]


def _fields(examples):
    return " and ".join(kind for kind, present in (
        ("tags", examples[0].tags is not None), ("labels", examples[0].label is not None)) if present)
