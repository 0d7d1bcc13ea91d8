"""Predictions as one self-contained HTML page, entities highlighted the way spaCy's displaCy shows them.

    write_html("predictions.html", (pred.to_json() for pred in predictions))  # or the lines of infer.py --json

The page has inline CSS and nothing else: no scripts, fonts or links, so it opens offline, can be mailed as one
file, and shows the same thing everywhere. Everything that comes from the data (texts, labels, entity types)
is escaped, and the Content-Security-Policy forbids scripts anyway, in case an escape is ever forgotten.
"""

import html
import re

from .userfile import replace_file

# displaCy's colours for the CoNLL-2003 types (PER is its PERSON, MISC takes its GPE yellow); any other type
# gets the next palette colour in sorted order, so a page's colours do not depend on the order of its texts.
COLOURS = {"PER": "#aa9cfc", "LOC": "#ff9561", "ORG": "#7aecec", "MISC": "#feca74"}
PALETTE = ("#bfeeb7", "#ffeb80", "#f0d0ff", "#bfe1d9", "#ff8197", "#c887fb", "#9cc9cc", "#e4e7d2")

CSS = """
body { font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; color: #222; background: #fff;
       margin: 24px auto; max-width: 56em; padding: 0 16px; }
h1 { font-size: 1.3em; margin: 0 0 10px; }
.summary { color: #666; font-size: 0.9em; margin: 10px 0; }
.legend { margin: 0 0 18px; color: #666; font-size: 0.9em; }
.key { display: inline-block; border-radius: 0.35em; padding: 0.2em 0.6em; font-size: 0.85em; font-weight: bold;
       color: #222; }
.doc { border: 1px solid #e2e2e2; border-radius: 8px; padding: 10px 16px 12px; margin: 0 0 14px; }
.meta { font-size: 0.85em; color: #666; margin-bottom: 2px; }
.badge { display: inline-block; background: #2b4c7e; color: #fff; border-radius: 1em; padding: 2px 10px;
         font-weight: bold; }
.badge .p { font-weight: normal; opacity: 0.85; margin-left: 0.3em; }
.others { margin-left: 0.6em; }
/* pre-wrap: spaces, tabs and newlines of the text show exactly as they were given */
.text { white-space: pre-wrap; overflow-wrap: anywhere; line-height: 2.5; font-size: 1.05em; }
mark.ent { padding: 0.25em 0.4em; margin: 0 0.15em; border-radius: 0.35em; line-height: 1; color: #222;
           box-decoration-break: clone; -webkit-box-decoration-break: clone; }
/* The type label is drawn by CSS, not written in the page: copying the text copies the text alone. */
mark.ent::after { content: attr(data-type); font-size: 0.62em; font-weight: bold; letter-spacing: 0.03em;
                  vertical-align: middle; margin-left: 0.5em; text-transform: uppercase; }
.none { color: #999; font-size: 0.85em; font-style: italic; }
"""


def html_page(predictions, title="minimtl predictions", types=None):
    """The page in pieces, one per prediction, so that any number of predictions (e.g. a generator) streams
    to a file. `types` fixes the legend and colours up front, e.g. every type a checkpoint can predict; without
    it they come from the predictions, which are then all read first."""
    if types is None:
        predictions = list(predictions)
        types = {e["type"] for p in predictions for e in p.get("entities") or ()}
    types = sorted(types)
    others = [t for t in types if t not in COLOURS]
    colours = {t: COLOURS.get(t) or PALETTE[others.index(t) % len(PALETTE)] for t in types}
    head = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_esc(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>", f"<h1>{_esc(title)}</h1>"]
    if types:
        keys = " ".join(f'<span class="key" style="background: {colours[t]}">{_esc(t)}</span>' for t in types)
        head.append(f'<div class="legend">entity types: {keys}</div>')
    yield "\n".join(head) + "\n"
    count = 0
    for count, prediction in enumerate(predictions, 1):
        yield _document(count, prediction, colours) + "\n"
    # The count goes last: a streamed page knows it only at the end.
    yield f'<div class="summary">{count} text{"" if count == 1 else "s"}</div>\n</body>\n</html>\n'


def render_html(predictions, title="minimtl predictions", types=None) -> str:
    """One HTML page for prediction dicts (Prediction.to_json(): text, optional label, label_probability,
    labels, entities with type/start/end/confidence)."""
    return "".join(html_page(predictions, title, types))


def write_html(path, predictions, title="minimtl predictions", types=None):
    """Write the page to `path` as the predictions come; returns how many there were. `path` must be a
    regular file or a new name, and is replaced only by a complete page (machinery/userfile.py): an error
    midway leaves it as it was."""
    count = 0

    def counted():
        nonlocal count
        for count, prediction in enumerate(predictions, 1):
            yield prediction

    with replace_file(path) as f:
        f.writelines(html_page(counted(), title, types))
    return count


def _document(number, prediction, colours):
    meta = [f"#{number}"]
    if prediction.get("label") is not None:
        probability = prediction.get("label_probability")
        shown = f'<span class="p">{probability:.2f}</span>' if probability is not None else ""
        meta.append(f'<span class="badge" title="category">{_esc(prediction["label"])}{shown}</span>')
        # What the model hesitated over, in small print; a class that would show as 0.00 is left out.
        runners_up = [(k, p) for k, p in (prediction.get("labels") or {}).items()
                      if k != prediction["label"] and p >= 0.005]
        if runners_up:
            meta.append('<span class="others">' + ", ".join(f"{_esc(k)} {p:.2f}" for k, p in runners_up) + "</span>")
    text, entities = prediction["text"], prediction.get("entities")
    pieces, position = [], 0
    for e in sorted(entities or (), key=lambda e: (e["start"], e["end"])):
        if not position <= e["start"] < e["end"] <= len(text):
            continue  # an overlapping or out-of-range span would repeat or drop text: the text comes first
        confidence = f" \u00b7 confidence {e['confidence']:.2f}" if e.get("confidence") is not None else ""
        pieces += [_esc(text[position:e["start"]]),
                   _mark(text[e["start"]:e["end"]], colours[e["type"]], e["type"], e["type"] + confidence,
                         e["start"], e["end"])]
        position = e["end"]
    pieces.append(_esc(text[position:]))
    note = '<div class="none">no entities found</div>' if entities == [] else ""
    return (f'<section class="doc">\n<div class="meta">{" ".join(meta)}</div>\n'
            f'<div class="text">{"".join(pieces)}</div>{note}\n</section>')


def _mark(content, colour, kind, tooltip, start, end):
    # class "ent ent-TYPE" for styling and tests; data-type holds the exact type, since a class name cannot.
    return (f'<mark class="ent ent-{re.sub(r"[^A-Za-z0-9_-]", "_", kind)}" data-type="{_esc(kind)}" '
            f'data-start="{start}" data-end="{end}" '
            f'style="background: {colour}" title="{_esc(tooltip)}">{_esc(content)}</mark>')


def _esc(text):
    return html.escape(str(text), quote=True)
