"""Several data sources in one run: each `--data` brings its own splits and the task(s) it has.

    CoNLL columns              -> NER                (tags)
    CSV text,label / AG News   -> classification     (labels; other columns by --text-column, --label-column)
    SNIPS/ATIS folders, JSONL  -> whatever they hold (both, for joint data)

The model has one head per task, so each task comes from exactly one source: two sources that both have
tags (or both labels) are refused, since their label sets would have to be merged and their metrics
would mean different things. A source keeps its own dev and test splits and is scored on them alone.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..batching import SplitIds, encode_split
from ..extensions.context import by_document, in_context, in_sentence_layout, window_inputs
from ..extensions.subtokens import all_subtoken_labels
from ..extensions.wordshape import add_shape_ids, shape_rows
from ..tokenization import labels
from .data import LabelVocab, Splits, load_data, unknown_labels
from ..guards.errors import UserError


@dataclass
class Source:
    name: str  # for logs and metric keys: the folder or file name, made unique
    splits: Splits
    labels: LabelVocab | None = None  # the model's sentence classes, when this source has labels
    tags: LabelVocab | None = None  # the model's BIO tags, when this source has tags
    ids: dict[str, SplitIds] = field(default_factory=dict)  # split name -> encoded sentences
    sha256: str = ""  # of every example (`fingerprint`): a resumed run must see the same data

    @property
    def tasks(self):
        return [task for task, present in (("cls", self.splits.has_labels), ("ner", self.splits.has_tags)) if present]


@dataclass
class Vocabularies:
    labels: LabelVocab | None  # sentence classes, from the one source that has labels
    tags: LabelVocab | None  # BIO tags, from the one source that has tags


def load_sources(paths, text_column=None, label_column=None):
    """Read every --data path, CSV tables by the columns their header names (formats.read_file); one clear error
    for a path given twice, two sources of one task, or columns named where no CSV is read."""
    columns = None if text_column is None and label_column is None else (text_column, label_column)
    sources, seen, names = [], set(), set()
    for path in paths:
        resolved = Path(path).resolve()
        if resolved in seen:  # checked before reading: the second copy would only be read to be refused
            raise UserError("given twice as --data", path)
        seen.add(resolved)
        name = resolved.name or str(path)
        while name in names:
            name += "'"
        names.add(name)
        source = Source(name, load_data(path, columns))
        source.sha256 = fingerprint(source)
        sources.append(source)
    if columns is not None and not any(s.splits.tables for s in sources):
        flag = "--text-column" if text_column is not None else "--label-column"
        raise UserError(f"{flag} selects a column of a CSV file's header, and no --data is read as CSV (nor as "
                        "tab-separated text,label rows): it would change nothing")
    for task, what in (("cls", "sentence labels"), ("ner", "entity tags")):
        having = [s.name for s in sources if task in s.tasks]
        if len(having) > 1:
            raise UserError(f"--data: {' and '.join(having)} both have {what}; one source per task (a model has "
                            "one head per task, and two label sets would have to be merged)")
    return sources


def vocabularies(sources):
    """Label and tag names <-> ids, from the training split of the source that has each task."""
    labels = next((LabelVocab.from_values(ex.label for ex in s.splits.train)
                   for s in sources if s.splits.has_labels), None)
    tags = next((LabelVocab.from_values(t for ex in s.splits.train for t in ex.tags)
                 for s in sources if s.splits.has_tags), None)
    return Vocabularies(labels, tags)


def encode_sources(sources, tokenizer, vocab, cfg, max_len, eval_len, log, word_shapes=False):
    """Token ids and label ids for every split; training sentences are cut at `max_len` (--max-len, as the
    recipe resolved it), the others only at the model's position limit `eval_len` (evaluation never cuts a
    sentence short). `word_shapes`: with each position's word shape (the recipe's, config.recipe)."""
    for s in sources:
        s.labels = labels = vocab.labels if s.splits.has_labels else None
        s.tags = tags = vocab.tags if s.splits.has_tags else None
        for message in s.splits.notes + unknown_labels(s.splits, labels, tags):
            log(f"note: {s.name}: {message}")
        for split in ("train", "dev", "test"):
            examples = getattr(s.splits, split)
            if examples is not None:
                s.ids[split] = encode_examples(tokenizer, examples, labels, tags, max_len if split == "train" else
                                               eval_len, cfg.label_all_subtokens, word_shapes,
                                               max_len if cfg.context else None)
        if cfg.context:
            documents = len({ex.document for ex in s.splits.train} - {None})
            log(f"note: {s.name}: " + (f"each sentence is read in its document ({documents} in train), with as many "
                                       f"neighbouring words as fit in --max-len {max_len}" if documents else
                                       "no documents (-DOCSTART-): --context reads its sentences alone"))
        cut = s.ids["train"].n_truncated
        test = len(s.splits.test) if s.splits.test is not None else "no"
        log(f"data: {s.splits.source}: {len(s.splits.train)} train / {len(s.splits.dev)} dev / {test} test "
            f"sentences; {len(labels or [])} labels, {len(tags or [])} tags"
            + (f"; {cut} train sentences cut at --max-len {max_len}" if cut else ""))


def encode_examples(tokenizer, examples, label_vocab, tag_vocab, max_len, all_subtokens=False, word_shapes=False,
                    context=None):
    """batching.encode_split of the examples, with what the run reads besides: each position's word shape
    (`word_shapes`, extensions/wordshape.py), and each sentence inside its document (`context`: the window, in
    positions, in which it is read with its neighbours, extensions/context.py). A document is a run of
    consecutive examples with the same `document`; an example without one is read alone. With context, the
    split holds each sentence alone, as without, and its window among the extra inputs (context.window_inputs)
    that `InContext` reads: the heads see only the sentence's own positions."""
    sentences = [list(ex.words) for ex in examples]
    rule = all_subtoken_labels if all_subtokens else labels
    if context is None:
        encodings = tokenizer.encode(sentences, max_len)
        split = encode_split(tokenizer, examples, label_vocab, tag_vocab, max_len, rule, encodings)
        return add_shape_ids(split, encodings, sentences) if word_shapes else split
    documents = [[sentences[i] for i in document] for document in by_document(examples)]
    windows = in_context(tokenizer, documents, context, max_len)
    layouts = [in_sentence_layout(enc, own) for _, enc, own in windows]
    split = encode_split(tokenizer, examples, label_vocab, tag_vocab, max_len, rule, [enc for enc, _ in layouts])
    split.extra.update(window_inputs(windows, layouts))
    if not word_shapes:
        return split
    document_words = [[w for sentence in document for w in sentence] for document in documents]
    words = [document_words[d] for d, document in enumerate(documents) for _ in document]
    split.extra["window_shape_ids"] = shape_rows([enc for _, enc, _ in windows], words, [f for f, _, _ in windows])
    return add_shape_ids(split, [enc for enc, _ in layouts], sentences)


def fingerprint(source):
    """sha256 of every example of every split: a resumed run must train on exactly the data it started with."""
    h = hashlib.sha256()
    for split in ("train", "dev", "test"):
        for ex in getattr(source.splits, split) or []:
            record = asdict(ex)
            if record["document"] is None:  # as before documents were read: the data of older runs hashes the same
                del record["document"]
            h.update(json.dumps(record).encode())
    return h.hexdigest()


def check_tasks(sources, cfg):
    """Refuse a loss weight of 0 on the only task a source has: that source would teach nothing."""
    weights = {"cls": ("--w-cls", cfg.w_cls), "ner": ("--w-ner", cfg.w_ner)}
    for s in sources:
        if all(weights[task][1] == 0 for task in s.tasks):
            raise UserError(f"{weights[s.tasks[0]][0]} 0: {s.name} has only that task, so it would teach nothing")
