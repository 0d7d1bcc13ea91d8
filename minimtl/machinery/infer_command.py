"""Predict the category and the entities of raw text with a trained checkpoint, or score it on labelled data.

    python infer.py "Alice went to Paris last summer." "Book a table for two"
    python infer.py --file texts.txt --json        # one text per line; --file - reads stdin
    cat texts.txt | python infer.py                # stdin, when no text is given
    python infer.py --file texts.txt --html predictions.html     # entities highlighted on one HTML page
    python infer.py --evaluate data/test.jsonl     # scores against the file's labels (a folder: its test split)
    python infer.py --min-confidence 0.8 "Alice went to Paris"     # only the entities at 0.8 or more
    python infer.py --precision int8 --file texts.txt   # the encoder's Linears in int8: faster on a CPU

Lines from a file or stdin are read and predicted a chunk at a time, and results are written as they come,
so a file of any length runs in bounded memory. A blank or non-UTF-8 line stops the run with an error naming
it (exit 2); results for the chunks before it have then already been written (--html leaves its file as it
was). A progress line goes to stderr when stderr is a terminal and the results go elsewhere.
"""
# This docstring is `infer.py --help`'s description: infer.py and the installed `minimtl-infer` both run main().

import argparse
import json
import os
import sys

import torch

from ..extensions.precision import PRECISIONS
from ..guards.errors import UserError
from .checkpoint import load_predictor
from .cli import add_config_flags
from .html import write_html
from .predictor import confident, format_prediction
from .report import evaluate_file, format_report
from .progress_line import ProgressLine
from .streaming import WAIT, arrives_over_time, predict_stream, read_lines
from .threads import Paced


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="*", help="texts to predict (default: one per line on stdin)")
    parser.add_argument("--file", help="read one text per line from FILE ('-' for stdin)")
    parser.add_argument("--checkpoint", default="runs/latest", help="checkpoint directory (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per text, one per line "
                        "(with --evaluate: the report as one JSON object)")
    parser.add_argument("--html", metavar="FILE", help="write the predictions as one self-contained HTML page, "
                        "entities highlighted by type, instead of printing them")
    parser.add_argument("--evaluate", metavar="DATA", help="score the checkpoint on a labelled data file or "
                        "folder in any format training reads: sentence accuracy and confusions, entity "
                        "P/R/F1 per type, frame accuracy")
    parser.add_argument("--split", choices=("train", "dev", "test"), help="with --evaluate on a data folder: "
                        "the split to score (default: test)")
    parser.add_argument("--min-confidence", metavar="P", help="leave out entities whose confidence (the "
                        "calibrated probability printed beside them) is below P, from 0 to 1; tags stay as decoded")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="fp32: as trained; int8: the "
                        "encoder's Linears in int8 (dynamic, per channel), faster on a CPU; bf16: products in "
                        "bfloat16, on CPUs that multiply it in hardware (AVX512-BF16, AMX). Also for --evaluate; "
                        "the checkpoint is read, never rewritten (default: %(default)s)")
    add_config_flags(parser, ("text_column", "label_column"))  # for --evaluate, as train.py reads its CSVs
    args = parser.parse_args()
    if args.texts and args.file:
        parser.error("give texts as arguments or with --file, not both")
    if args.evaluate and (args.texts or args.file or args.html):
        parser.error("--evaluate reads its texts and labels from DATA: give no texts, --file or --html")
    columns = None if args.text_column is None and args.label_column is None else (args.text_column, args.label_column)
    if columns and not args.evaluate:
        parser.error("--text-column and --label-column select the columns of the CSV file that --evaluate reads")
    if args.split and not args.evaluate:
        parser.error("--split picks the split that --evaluate scores")
    if args.json and args.html:
        parser.error("give --json or --html, not both")
    if args.evaluate and args.min_confidence is not None:
        parser.error("--min-confidence filters predicted entities; --evaluate scores every one of them")
    try:
        args.min_confidence = probability("--min-confidence", args.min_confidence)
        # Started with stdin or stdout closed (`<&-`, `>&-`), Python has None there: say so, before any work.
        if sys.stdout is None and not args.html:
            raise UserError("stdout is closed: the results would go nowhere (redirect it, or give --html FILE)")
        if sys.stdin is None and not (args.texts or args.file or args.evaluate):
            raise UserError("no text: stdin is closed; give the texts as arguments or with --file FILE")
        if args.evaluate:
            report = evaluate_file(args.checkpoint, args.evaluate, args.split, args.precision, columns, quiet=False)
            print(json.dumps(report.to_json(), ensure_ascii=False) if args.json else format_report(report))
        else:
            predict(args)
        if sys.stdout is not None:
            sys.stdout.flush()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:  # `infer.py ... | head -1`: the reader has all it wanted
        _discard_stdout()
    except OSError as e:  # the system said no (stdout on a full disk, a device gone): not a bug, one line
        # The files infer.py reads and writes report their own errors; one without a file name is stdout's.
        where = f"{e.filename}: " if e.filename else "writing the results: "
        print(f"error: {UserError(f'{where}{e.strerror or e}')}", file=sys.stderr)
        _discard_stdout()
        sys.exit(2)


def probability(flag, text):
    """A number from 0 to 1 given as `flag`, 0.0 when the flag is absent."""
    if text is None:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= 1:  # nan fails both comparisons
        raise UserError(f"{flag} must be a probability from 0 to 1, not {text!r}")
    return value


def _discard_stdout():
    """Point stdout at /dev/null, so that the flush at exit cannot fail again (and print a second error)."""
    if sys.stdout is not None:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def predict(args):
    if args.file:
        lines = read_lines(args.file)
    elif not args.texts and not sys.stdin.isatty():
        lines = read_lines("-")
    elif not args.texts:
        raise UserError("no text: give it as an argument, with --file FILE, or on stdin")
    if args.texts:
        # A few sentences are too little work to share: the second thread's hand-offs cost more than it
        # computes, and on a busy machine every op can wait for a thread the scheduler has put aside.
        torch.set_num_threads(1)
    predictor = load_predictor(args.checkpoint, precision=args.precision)
    # Progress on stderr when it is a terminal, and not the one the results are printed on.
    to_terminal = sys.stderr.isatty() and (args.html or not sys.stdout.isatty())
    progress = ProgressLine(None, "predicting", quiet=not to_terminal, terminal=sys.stderr, unit="texts")
    try:
        if args.texts:  # few, and numbered as given in error messages
            predictions = predictor.predictions(args.texts)
        else:
            def after_chunk(texts):
                sys.stdout.flush()  # a pipe's reader gets each chunk's results now, not when a buffer fills
                progress.step(texts)
            # From a pipe, the lines that have arrived are predicted without waiting for a whole chunk; the thread
            # count is the one measured fastest now (said only to a person at a terminal).
            wait = WAIT if arrives_over_time(args.file or "-") else None
            say = (lambda line: print(f"\n{line}", file=sys.stderr)) if sys.stderr.isatty() else (lambda line: None)
            predictions = predict_stream(predictor, lines, progress=after_chunk, wait=wait,
                                         pace=lambda chunks: Paced(chunks, None, "texts", say))
        if args.min_confidence:
            predictions = (confident(pred, args.min_confidence) for pred in predictions)
        if args.html:
            count = write_html(args.html, (p.to_json() for p in predictions), types=predictor.entity_types)
            progress.end()
            print(f"wrote {args.html}: {count} text{'s' * (count != 1)}", file=sys.stderr)
        else:
            for i, pred in enumerate(predictions):
                print(json.dumps(pred.to_json(), ensure_ascii=False) if args.json else
                      ("\n" if i else "") + format_prediction(pred))  # a blank line between texts
    finally:
        progress.end()
