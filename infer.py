"""Predict the category and the entities of raw text with a trained checkpoint.

    python infer.py "Alice went to Paris last summer." "Book a table for two"
    python infer.py --file texts.txt --json        # one text per line; --file - reads stdin
    cat texts.txt | python infer.py                # stdin, when no text is given
"""

import argparse
import json
import os
import sys

from minimtl.machinery.errors import UserError
from minimtl.inference import Predictor, format_prediction


def read_texts(name):
    """One text per line of a file ('-' for stdin); a blank or undecodable line is an error naming it."""
    if name == "-":
        name, data = "<stdin>", sys.stdin.buffer.read()
    else:
        try:
            with open(name, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise UserError("file not found", name) from None
        except OSError as e:
            raise UserError(f"cannot read ({e.strerror})", name) from None
    texts = []
    # Decoded line by line, so an encoding problem is reported with its line number.
    for number, line in enumerate(data.splitlines(), 1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"not UTF-8 (byte {e.start + 1} of the line)", name, number) from None
        if not text.strip():
            raise UserError("empty line: give one text per line", name, number)
        texts.append(text)
    if not texts:
        raise UserError("no text in the file", name)
    return texts


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="*", help="texts to predict (default: one per line on stdin)")
    parser.add_argument("--file", help="read one text per line from FILE ('-' for stdin)")
    parser.add_argument("--checkpoint", default="runs/latest", help="checkpoint directory (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per text, one per line")
    args = parser.parse_args()
    if args.texts and args.file:
        parser.error("give texts as arguments or with --file, not both")
    try:
        if args.file:
            texts = read_texts(args.file)
        elif args.texts:
            texts = args.texts
        elif not sys.stdin.isatty():
            texts = read_texts("-")
        else:
            raise UserError("no text: give it as an argument, with --file FILE, or on stdin")
        predictions = Predictor.from_checkpoint(args.checkpoint).predict(texts)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        if args.json:
            for pred in predictions:
                print(json.dumps(pred.to_json(), ensure_ascii=False))
        else:
            print("\n\n".join(format_prediction(pred) for pred in predictions))
        sys.stdout.flush()
    except BrokenPipeError:  # `infer.py ... | head -1`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again


if __name__ == "__main__":
    main()
