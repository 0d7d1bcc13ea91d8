"""A saved checkpoint scored on any data file, and the tables a person reads: confusions, entities per type.

    report = evaluate_file("runs/latest", "../shared/data/conll2003")   # a folder: its test split
    print(format_report(report))                                        # or json.dumps(report.to_json())

With the report comes the expected calibration error of its sentence labels and entities, without and with the
checkpoint's temperatures (calibration.py).

The file becomes a split exactly as training builds its test split (the same readers, the checkpoint's own
label and tag vocabularies, sentences cut only at the model's position limit) and goes through the same
`evaluation.predict` and `evaluation.score`. So on a run's own test split the scores equal the test scores
in its results.json to the last digit (on the device training evaluated on; here the CPU). A label or tag the
checkpoint never saw is reported once and counted as wrong, as in training.
"""

import math
from collections import Counter
from dataclasses import dataclass

from ..extensions.calibration import ECE_BINS, calibration_report
from ..evaluation import EVAL_BATCH, head_outputs, predict, score
from .assemble import word_shapes_of
from .checkpoint import load_with_tokenizer
from .progress_line import ProgressLine, counted
from .data import LabelVocab, Splits, load_split, unseen
from ..guards.errors import UserError
from ..freezing import kind, unit_learning_rates, unit_modules, units
from ..extensions.precision import for_inference, forward_in
from .sources import Source, encode_examples

TOP_CONFUSIONS = 5  # the sentence-label mistakes shown: enough to see a pattern, short enough to read


@dataclass
class Report:
    data: str  # what was read, e.g. "JSON lines in data/test.jsonl"
    sentences: int
    scores: dict  # flat, with the names results.json uses: "label_accuracy", "entity_f1/LOC", ...
    confusions: list  # [(gold, predicted, count)], the most frequent wrong sentence labels first
    notes: list  # what was not scored, or counted as wrong, and why
    # {"temperature": the checkpoint's, "ece": {"label_ece_before", ..., "entity_ece_after"}} (calibration.py)
    calibration: dict

    def to_json(self):
        return {"data": self.data, "sentences": self.sentences, "scores": self.scores,
                "confusions": [{"gold": g, "predicted": p, "count": n} for g, p, n in self.confusions],
                "notes": self.notes, "calibration": self.calibration}


def evaluate_file(checkpoint, path, split=None, precision="fp32", columns=None, quiet=True):
    """Score the checkpoint in directory `checkpoint` on a data file, or on a split of a data folder (test
    unless `split` says otherwise), predicting in `precision` (precision.py) on the CPU. `columns`: the
    (text, label) columns of a CSV's header to read (formats.read_file). Unless `quiet`, the pass shows its
    progress on stderr when that is a terminal (progress_line.py)."""
    examples, description = load_split(path, split, columns)
    split = split or "test"
    model, meta, tokenizer = load_with_tokenizer(checkpoint)
    model = for_inference(model, precision, "cpu")
    labels, tags, notes = _vocabularies(meta, examples, description)
    notes += unseen(examples, labels, tags) + context_notes(meta, examples)
    # The split keeps its name so that `predict` reads it as training does; the other splits stay empty.
    splits = Splits(**{"train": [], "dev": [], "test": None, split: examples}, source=description)
    # Word shapes and document context as the run trained with them (none in a checkpoint older than they are).
    window = meta.get("max_len") or model.bert.config.max_tokens
    ids = encode_examples(tokenizer, examples, labels, tags, model.bert.config.max_tokens,
                          word_shapes=bool(word_shapes_of(model)), context=window if meta.get("context") else None)
    source = Source("evaluated", splits, labels, tags, {split: ids})
    line = ProgressLine(math.ceil(len(examples) / EVAL_BATCH), "scoring", lambda _: None, quiet)  # no plain lines
    outputs = head_outputs(model, source, split, counted(forward_in(model, "cpu", precision), line))  # scores, ECE
    predicted_labels, predicted_tags = predict(model, source, split, outputs=outputs)
    confusions = []
    if predicted_labels is not None:
        wrong = Counter((ex.label, p) for ex, p in zip(examples, predicted_labels) if ex.label != p)
        confusions = [(g, p, n) for (g, p), n in wrong.most_common(TOP_CONFUSIONS)]
    temperatures = meta.get("temperature", {})
    errors, _ = calibration_report(model, [source], split, temperatures, {source.name: outputs})
    return Report(description, len(examples), score(examples, predicted_labels, predicted_tags), confusions, notes,
                  {"temperature": temperatures, "ece": errors})


def context_notes(meta, examples):
    """Where the data's documents and the model's training disagree: read as trained, but not silently."""
    has_documents = any(ex.document is not None for ex in examples)
    if meta.get("context") and not has_documents:
        return ["the model was trained reading each sentence in its document (--context), and this data has no "
                "documents (-DOCSTART-): each sentence is read alone, so scores may fall short of training's"]
    if has_documents and not meta.get("context"):
        return ["this data has documents (-DOCSTART-), and the model was trained without --context: each sentence "
                "is read alone, as in training"]
    return []


def _vocabularies(meta, examples, description):
    """(label vocabulary, tag vocabulary, notes): a task is scored when the data has it and the model predicts
    it; data with neither is an error, since there would be nothing to score."""
    has_labels, has_tags = examples[0].label is not None, examples[0].tags is not None  # the readers check all
    labels = LabelVocab(meta["labels"]) if has_labels and meta.get("labels") else None
    tags = LabelVocab(meta["tags"]) if has_tags and meta.get("tags") else None
    notes = [f"the data's {what} are not scored: the checkpoint has no {head}"
             for present, vocab, what, head in ((has_labels, labels, "sentence labels", "sentence head"),
                                                (has_tags, tags, "entity tags", "tagging head")) if present and not vocab]
    if labels is None and tags is None:
        raise UserError(f"nothing to score: {description} has {_what(has_labels, has_tags)}, but the checkpoint "
                        f"predicts {_what(bool(meta.get('labels')), bool(meta.get('tags')))}")
    return labels, tags, notes


def _what(labels, tags):
    return " and ".join(name for name, present in (("sentence labels", labels), ("entity tags", tags)) if present)


# --- what a person reads ------------------------------------------------------------------------------

def format_report(report):
    """The report as a few aligned lines: accuracy and confusions, the entity table, frame accuracy."""
    s, n = report.scores, report.sentences
    lines = [f"{report.data}: {n} sentence{'s' * (n != 1)}"] + [f"note: {note}" for note in report.notes]
    if "label_accuracy" in s:
        lines.append(f"sentence accuracy {_pct(s['label_accuracy'])}  ({round(s['label_accuracy'] * n)} of {n} right)")
        if report.confusions:
            lines.append("  most frequent confusions (gold -> predicted):")
            lines += [f"  {count:>5}  {gold} -> {predicted}" for gold, predicted, count in report.confusions]
    if "entity_f1" in s:
        lines.append(f"entities: F1 {_pct(s['entity_f1'])}, exact type and span (seqeval's default); "
                     f"token accuracy {_pct(s['token_accuracy'])}")
        lines.append(entity_table(s))
    if "frame_accuracy" in s:
        lines.append(f"frame accuracy {_pct(s['frame_accuracy'])}  (label and every tag right)")
    return "\n".join(lines + calibration_lines(report.calibration))


def calibration_lines(calibration):
    """ECE before -> after the checkpoint's temperatures, one line per task (none when nothing was predicted)."""
    temperatures, ece = calibration["temperature"], calibration["ece"]
    tasks = (("label", "sentence labels", "cls"), ("entity", "entities", "ner"))
    rows = [(task, name, head) for task, name, head in tasks if f"{task}_ece_before" in ece]
    if not rows:
        return []
    lines = [f"calibration: expected calibration error ({ECE_BINS} bins), uncalibrated -> with the checkpoint's "
             f"temperature" + ("" if temperatures else " (it has none: T = 1)")]
    for task, name, head in rows:
        lines.append(f"  {name:<15}  {_pct(ece[task + '_ece_before']):>6}% -> {_pct(ece[task + '_ece_after']):>6}%"
                     f"  (T = {temperatures.get(head, 1.0):.3f})")
    return lines


def entity_table(scores, prefix=""):
    """Precision, recall, F1 and gold support per entity type, then the micro average, from a flat score dict
    (metrics.evaluate's names, after `prefix`, e.g. "conll2003/"); "" when it has no entity scores."""
    if prefix + "entity_f1" not in scores:
        return ""
    marker = prefix + "entity_support/"
    types = [key[len(marker):] for key in scores if key.startswith(marker)]
    rows = [(t, f"entity_{{}}/{t}") for t in types] + [("micro avg", "entity_{}")]
    width = max(len("type"), *(len(name) for name, _ in rows))
    lines = [f"  {'type':<{width}}  precision  recall      F1  support"]
    for name, key in rows:
        p, r, f, support = (scores[prefix + key.format(m)] for m in ("precision", "recall", "f1", "support"))
        lines.append(f"  {name:<{width}}  {_pct(p):>9}  {_pct(r):>6}  {_pct(f):>6}  {support:>7}")
    return "\n".join(lines)


def entity_tables(scores, source_names):
    """The entity table of every source that has one, each under its name when the run has several."""
    if len(source_names) == 1:
        return entity_table(scores)
    tables = [(name, entity_table(scores, f"{name}/")) for name in source_names]
    return "\n".join(f"{name}:\n{table}" for name, table in tables if table)


def _pct(value):
    return f"{100 * value:.2f}"


def parameter_table(model, frozen, lrs, layer_decay=1.0):
    """The start-of-training table: one row per unit (the `frozen` ones marked), then the totals."""
    unit_lrs = unit_learning_rates(model, lrs, layer_decay)
    rows = [("group", "tensors", "parameters", "% of total", "lr", "frozen?")]
    total = sum(p.numel() for p in model.parameters())
    trainable = 0
    for unit, params in units(model).items():
        n = sum(p.numel() for p in params)
        trainable += 0 if unit in frozen else n
        lr = "-" if unit in frozen else f"{unit_lrs[unit]:.2e}"
        rows.append((unit, str(len(params)), f"{n:,}", f"{100 * n / total:.2f}", lr, "yes" if unit in frozen else "no"))
        if kind(unit) == "heads":  # what a head is made of: its layer mix, BiLSTM, output layer, CRF transitions
            parts = [(name, list(m.parameters())) for name, m in unit_modules(model)[unit].named_children()]
            parts = [(name, ps) for name, ps in parts if ps]
            for name, ps in parts if len(parts) > 1 else []:
                k = sum(p.numel() for p in ps)
                rows.append((f"  .{name}", str(len(ps)), f"{k:,}", f"{100 * k / total:.2f}", "", ""))
    rows.append(("trainable", "", f"{trainable:,}", f"{100 * trainable / total:.2f}", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)
