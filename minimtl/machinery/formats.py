"""The readers of each data format (machinery/data.py says which file gets which), and their checks.

`read_file` picks the reader by extension. Every reader returns a list of `Example`s, or raises a `UserError`
naming the file and line. Tags may be BIO, IOB1, BIOES or BILOU: tag_schemes.py reads them all as BIO. A CSV
written label first (`label,text`) would read as plausible data and give one class per row: it is refused
(`_check_not_swapped`), and so is any header other than text,label, unless --text-column / --label-column
name the columns to read (`_select`).
"""

import csv
import io
from dataclasses import dataclass

from ..guards.errors import UserError, parse_json, quote
from .tag_schemes import is_tag



@dataclass(frozen=True)
class Example:
    words: tuple[str, ...]
    tags: tuple[str, ...] | None = None  # one BIO tag per word, or None for classification-only data
    label: str | None = None  # the sentence label, or None for NER-only data
    document: int | None = None  # which document of its file the sentence is in (CoNLL's -DOCSTART-), or None


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
    """`tag` as written, when it is BIO or a BIOES/BILOU tag (`from_bioes` rewrites those), else a UserError."""
    if not is_tag(tag):
        raise UserError(f"tag {quote(tag)} is not O, B-TYPE or I-TYPE (nor BIOES/BILOU's S-, E-, U-, L-TYPE)", path,
                        line)
    return tag


def _label(value, classes, path, line):
    """A label as written (a name, or an integer index into classes.txt when there is one) -> its name."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise UserError(f"a label must be a string or an integer, not {quote(value)}", path, line)
    name = str(value).strip()
    if not name:
        raise UserError("empty label", path, line)
    if classes is None or name in classes:
        return name
    index = _index(name)
    if index is not None and index < len(classes):
        return classes[index]
    raise UserError(f"label {quote(name)} is neither a name in classes.txt nor an index 0-{len(classes) - 1}",
                    path, line)


def _tag_name(tag, names, path, line):
    """A tag as written in JSON (a name, or an id into tags.txt) -> its name."""
    if isinstance(tag, str):
        return tag
    if names is None:
        raise UserError(f"tag id {tag}: give the tag names in id order in tags.txt beside the file (transformers' "
                        "datasets keep them in their features, not in the JSON)", path, line)
    if not 0 <= tag < len(names):
        raise UserError(f"tag id {tag} is not an index 0-{len(names) - 1} of tags.txt", path, line)
    return names[tag]


def _index(name):
    """The class index `name` spells in ASCII digits, or None. ('²' is a digit to str.isdigit, but not to int;
    and int refuses more than 4300 digits, which no index needs.)"""
    digits = name.lstrip("0") or "0"
    return int(digits) if name.isascii() and name.isdigit() and len(digits) <= 18 else None


def _read_classes(path):
    """classes.txt beside a CSV/JSONL file: label names in index order, or None when there is no such file."""
    if not path.is_file():
        return None
    classes = []
    for i, line in enumerate(_lines(path), 1):
        name = line.strip()
        if not name or name in classes:
            raise UserError("blank line in a classes file" if not name else f"class {quote(name)} listed twice",
                            path, i)
        classes.append(name)
    return classes


# --- the formats -----------------------------------------------------------------------------------------

def read_seq_folder(folder):
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
    """Sentences between blank lines. A `-DOCSTART-` line starts a new document: each sentence keeps the number
    of its document (0, 1, ...; the sentences before the first marker are document 0), which --context reads.
    In a file without any marker the sentences are independent: their document is None."""
    examples, sentence = [], []
    document, marked = 0, False
    for i, line in enumerate(_lines(path) + [""], 1):  # the extra blank line ends the last sentence
        columns = line.split()
        if columns and columns[0] != "-DOCSTART-":
            if len(columns) < 2:
                raise UserError(f"expected 'word ... TAG' columns, found only {quote(columns[0])}", path, i)
            sentence.append((columns[0], _tag(columns[-1], path, i)))
            continue
        if sentence:  # a blank line or a document marker ends a sentence
            words, tags = zip(*sentence)
            examples.append(Example(words, tags, document=document))
            sentence = []
        if columns:  # -DOCSTART-
            document += bool(examples) and examples[-1].document == document  # a new number, unless still empty
            marked = True
    return examples if marked else [Example(ex.words, ex.tags) for ex in examples]


COLUMN_NAMES = {"text", "sentence", "utterance", "query", "question", "title", "content", "body", "document",
                "label", "intent", "class", "category", "topic", "target"}  # what a CSV header calls its columns
TAB = "\t"
SELECT = "--text-column NAME --label-column NAME"  # the flags that pick a table's columns by its header


def read_file(path, columns=None):
    """(examples, format name, whether it was read as a table: CSV, or tab-separated text<TAB>label rows) of one
    data file. `columns`: (text column, label column) names the table's header must have, either None for
    text or label; None: text,label rows with an optional text,label header."""
    suffix = path.suffix.lower()
    if suffix == ".csv" or suffix == ".tsv" and not _is_conll(path):  # CoNLL columns: the first line ends in a tag
        name = FORMATS[suffix] if columns is None else \
            f"{FORMATS[suffix]} (columns {columns[0] or 'text'},{columns[1] or 'label'} by its header)"
        return _read_table(path, columns, TAB if suffix == ".tsv" else ","), name, True
    return (_read_jsonl if suffix == ".jsonl" else _read_conll)(path), FORMATS[suffix], False


def _is_conll(path):
    first = next(line for line in _lines(path) if line.strip())
    return is_tag(first.split()[-1])


def _read_table(path, columns=None, delimiter=","):
    """Rows of text,label, or with `columns` the two columns its header names (any others are ignored)."""
    classes = _read_classes(path.parent / "classes.txt")
    text = _read_text(path)
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records, next_line = [], 1  # (text, label, line) of every row
    picked = None  # (text index, label index, fields per row) once a header selected them
    limit = csv.field_size_limit()
    # No field is longer than its file, so this limit (131,072 characters by default) never refuses a
    # legitimate text, and it is still a bound.
    csv.field_size_limit(max(limit, len(text)))
    try:
        for row in rows:
            # A quoted field may span lines: report the line the record starts on.
            line, next_line = next_line, rows.line_num + 1
            if not any(field.strip() for field in row):
                continue
            if columns is not None and picked is None:
                picked = _select(row, columns, path, line, delimiter)
                continue
            if picked is None and not records and _is_header(row, path, line, delimiter):
                continue
            wanted = picked[2] if picked else 2
            if len(row) != wanted:
                what = "as many as the header" if picked else "text,label"
                raise UserError(f"expected {wanted} fields ({what}), found {len(row)}: quote a text that has "
                                f"{'tabs' if delimiter == TAB else 'commas'}", path, line)
            text_at, label_at = picked[:2] if picked else (0, 1)
            records.append((row[text_at], row[label_at], line))
    except csv.Error as e:
        raise UserError(f"malformed CSV ({e})", path, rows.line_num) from None
    finally:
        csv.field_size_limit(limit)
    if classes is None and picked is None:
        _check_not_swapped(records, path)
    examples = []
    for text, label, line in records:
        words = tuple(text.split())
        if not words:
            raise UserError("empty text", path, line)
        examples.append(Example(words, None, _label(label, classes, path, line)))
    return examples


def _is_header(row, path, line, delimiter):
    """Whether the first row is the text,label header; a UserError when it is another header, which read as
    data would become a sentence of a class named after its column."""
    header = [field.strip().lower() for field in row]
    if header == ["text", "label"]:
        return True
    shown = quote(delimiter.join(row))
    if header == ["label", "text"]:
        raise UserError(f"the header is label,text: write the columns as text,label, or select them with {SELECT}",
                        path, line)
    if set(header) & COLUMN_NAMES and (len(header) != 2 or set(header) <= COLUMN_NAMES):
        raise UserError(f"the header is {shown}: name the columns text,label, or select them with {SELECT}", path,
                        line)
    return False


def _select(header, columns, path, line, delimiter):
    """(text index, label index, field count) of the `columns` (names; None: text, label) in a header row."""
    names = [field.strip().lower() for field in header]
    picked = []
    for flag, name, default in zip(("--text-column", "--label-column"), columns, ("text", "label")):
        wanted = (name or default).strip().lower()
        if wanted not in names:
            given = f"{flag} {quote(name)}" if name else f"no {flag}, so {quote(default)}"
            raise UserError(f"the header {quote(delimiter.join(header))} has no column {quote(name or default)} "
                            f"({given})", path, line)
        if names.count(wanted) > 1:
            raise UserError(f"the header {quote(delimiter.join(header))} has two columns {quote(name or default)}",
                            path, line)
        picked.append(names.index(wanted))
    if picked[0] == picked[1]:
        raise UserError(f"--text-column and --label-column both select column {quote(header[picked[0]])}", path,
                        line)
    return picked[0], picked[1], len(header)


def _check_not_swapped(records, path):
    """Refuse a CSV that reads as label,text: its "labels" are mostly texts of several words, and there are
    more different ones than different "texts". Real labels are never more varied than the texts they label."""
    labels = {label.strip() for _, label, _ in records}
    texts = {text.strip() for text, _, _ in records}
    several_words = sum(len(label.split()) > 1 for _, label, _ in records)
    if 2 * several_words > len(records) and len(texts) < len(labels):
        example = max(labels, key=len)
        raise UserError(f"the columns look swapped: the second column, read as labels, holds {len(labels):,} "
                        f"different texts of several words (e.g. {quote(example)}), the first only {len(texts):,} "
                        "different values: write each row as text,label", path)


def _read_jsonl(path):
    """One JSON object per line: `tokens` (a list of words) or `text` (a string), with `tags` (or `ner_tags`, as
    transformers' datasets write them: tag names, or ids into tags.txt beside the file) and/or `label` (a
    name, or an id into classes.txt). Other keys (`id`, `pos_tags`, ...) are ignored."""
    classes, tag_names = _read_classes(path.parent / "classes.txt"), _read_classes(path.parent / "tags.txt")
    examples, first = [], None
    for i, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        record = parse_json(line, path, i)
        if not isinstance(record, dict):
            raise UserError(f"expected a JSON object, found {type(record).__name__}", path, i)
        keys = [key for key in ("tokens", "text", "tags", "ner_tags", "label") if key in record]
        if first is None:
            first = (i, keys)
        if keys != first[1]:
            raise UserError(f"has keys {keys} but line {first[0]} has {first[1]}: every line needs the same", path, i)
        examples.append(_json_example(record, classes, tag_names, path, i))
    return examples


def _json_example(record, classes, tag_names, path, line):
    if "tokens" in record:
        words = record["tokens"]
        if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
            raise UserError("'tokens' must be a list of non-blank strings", path, line)
    elif "tags" in record or "ner_tags" in record or not isinstance(record.get("text"), str):
        raise UserError("a JSON line needs 'tokens' (a list of words; required with 'tags') or 'text' (a string)",
                        path, line)
    else:
        words = record["text"].split()
    if not words:
        raise UserError("no words", path, line)
    key = next((k for k in ("tags", "ner_tags") if k in record), None)
    if key is None and "label" not in record:
        raise UserError("a JSON line needs 'tags', 'label' or both ('ner_tags' is read as 'tags')", path, line)
    tags = None
    if key is not None:
        tags = record[key]
        if not isinstance(tags, list) or len(tags) != len(words) or not all(
                isinstance(t, str) or type(t) is int for t in tags):
            raise UserError(f"{key!r} must be a list of {len(words)} strings (or ids into tags.txt), one per token",
                            path, line)
        tags = tuple(_tag(_tag_name(tag, tag_names, path, line), path, line) for tag in tags)
    label = _label(record["label"], classes, path, line) if "label" in record else None
    return Example(tuple(words), tags, label)


# file extension -> format name, for logs (`read_file` reads each)
FORMATS = {".txt": "CoNLL columns", ".conll": "CoNLL columns", ".tsv": "tab-separated columns",
           ".csv": "CSV text,label", ".jsonl": "JSON lines"}
