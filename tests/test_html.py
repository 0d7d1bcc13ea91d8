"""The predictions page: everything escaped, nothing fetched or run, and the spans read back exactly."""

import html
import json
import subprocess
import sys
from html.parser import HTMLParser

import pytest
from conftest import ROOT

from minimtl.guards.errors import UserError
from minimtl.machinery.html import render_html, write_html

HOSTILE = 'Tom & "Jerry" said <script>alert(1)</script> in O\'Brien\'s <b>Berlin</b>.\n\tNext  line.'


def entity(text, kind, piece, confidence=0.9):
    start = text.index(piece)
    return {"type": kind, "text": piece, "start": start, "end": start + len(piece), "confidence": confidence,
            "first_word": 0, "last_word": 0}


def prediction(text, entities=(), label="World", probability=0.93):
    out = {"text": text, "words": text.split(), "tags": ["O"] * len(text.split())}
    if label is not None:
        out.update(label=label, label_probability=probability, labels={label: probability, "Sports": 0.05})
    if entities is not None:
        out["entities"] = [entity(text, kind, piece) for kind, piece in entities]
    return out


class Marks(HTMLParser):
    """Reads back every <mark data-start=...> (its attributes and the text inside it), the text of each
    prediction, and the names of all tags."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.marks, self.tags, self.current, self.texts, self.in_text = [], [], None, [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "mark" and "data-start" in attrs:
            self.current = {"attrs": attrs, "text": "", "doc": len(self.texts) - 1}  # inside the last text
        if tag == "div" and attrs.get("class") == "text":  # the text of one prediction, marks included
            self.texts.append("")
            self.in_text = True

    def handle_endtag(self, tag):
        if tag == "mark" and self.current is not None:
            self.marks.append(self.current)
            self.current = None
        if tag == "div":
            self.in_text = False

    def handle_data(self, data):
        if self.current is not None:
            self.current["text"] += data
        if self.in_text:
            self.texts[-1] += data


def parse(page):
    parser = Marks()
    parser.feed(page)
    parser.close()
    return parser


def test_spans_read_back_exactly():
    texts = ["Angela Merkel met Emmanuel Macron in Paris to discuss the European Union budget.",
             "Serena Williams won at Wimbledon.\nBritish fans cheered."]
    preds = [prediction(texts[0], [("PER", "Angela Merkel"), ("PER", "Emmanuel Macron"), ("LOC", "Paris"),
                                   ("ORG", "European Union")]),
             prediction(texts[1], [("PER", "Serena Williams"), ("MISC", "Wimbledon"), ("MISC", "British")])]
    marks = parse(render_html(preds)).marks
    expected = [(i, e["start"], e["end"], e["type"]) for i, p in enumerate(preds) for e in p["entities"]]
    got, doc, last = [], 0, -1
    for mark in marks:
        start, end = int(mark["attrs"]["data-start"]), int(mark["attrs"]["data-end"])
        doc += start <= last  # offsets restart with each new text
        last = start
        got.append((doc, start, end, mark["attrs"]["data-type"]))
        assert mark["text"] == texts[doc][start:end]
        assert mark["attrs"]["class"].split() == ["ent", "ent-" + mark["attrs"]["data-type"]]
        assert "confidence 0.90" in mark["attrs"]["title"]
    assert got == expected


def test_text_between_spans_is_preserved():
    preds = [prediction(HOSTILE, [("PER", "Tom"), ("LOC", "Berlin")])]
    page = render_html(preds)
    assert parse(page).texts == [HOSTILE]
    assert "white-space: pre-wrap" in page


def test_hostile_text_is_escaped():
    hostile_label = '<img src=x onerror="alert(2)">'
    preds = [prediction(HOSTILE, [("PER", "Tom & \"Jerry\""), ('<script>"', "Berlin")], label=hostile_label),
             prediction("<script>alert(3)</script>", [("ORG", "<script>")])]
    page = render_html(preds, title="</title><script>alert(4)</script>")
    lowered = page.lower()
    assert "<script" not in lowered and "<img" not in lowered
    parser = parse(page)
    assert {"script", "img", "b"}.isdisjoint(parser.tags)
    assert [m["text"] for m in parser.marks] == ['Tom & "Jerry"', "Berlin", "<script>"]
    assert [m["attrs"]["data-type"] for m in parser.marks] == ["PER", '<script>"', "ORG"]
    assert hostile_label not in page and "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in page


def test_self_contained():
    page = render_html([prediction(HOSTILE, [("PER", "Tom")])])
    lowered = page.lower()
    for forbidden in ("http://", "https://", "<link", "<script", "@import", "url(", "<iframe", "<img"):
        assert forbidden not in lowered
    assert lowered.startswith("<!doctype html>") and "<style>" in lowered


def test_without_labels_or_entities():
    preds = [prediction("Only a label.", entities=None),
             prediction("Only entities: Alice.", [("PER", "Alice")], label=None),
             prediction("Neither.", entities=None, label=None),
             prediction("Nothing found.", entities=[])]
    page = render_html(preds)
    parser = parse(page)
    assert parser.texts == [p["text"] for p in preds]
    assert [m["text"] for m in parser.marks] == ["Alice"]
    assert page.count('class="badge"') == 2
    assert page.count("no entities found") == 1  # only where the model looked and found none
    assert render_html([])  # an empty page is still a page


def test_legend_colours_are_stable():
    a = render_html([prediction("Paris and Alice and Zed and Apple.",
                                [("LOC", "Paris"), ("PER", "Alice"), ("ZED", "Zed"), ("ART", "Apple")])])
    b = render_html([prediction("Apple, Zed.", [("ART", "Apple"), ("ZED", "Zed")]),
                     prediction("Alice in Paris.", [("PER", "Alice"), ("LOC", "Paris")])])

    def colours(page):
        return {m["attrs"]["data-type"]: m["attrs"]["style"] for m in parse(page).marks}

    assert colours(a) == colours(b)
    assert len(set(colours(a).values())) == 4
    assert colours(a)["PER"] == "background: #aa9cfc"


def test_write_html(tmp_path):
    path = tmp_path / "page.html"
    write_html(path, [prediction("Zoë visited Zürich.", [("PER", "Zoë"), ("LOC", "Zürich")])])
    page = path.read_text(encoding="utf-8")
    assert '<meta charset="utf-8">' in page and "Zürich" in page


# --- the page behind `infer.py --html` ------------------------------------------------------------------

def test_types_given_up_front_fix_the_legend_and_stream(tmp_path):
    pulled = []

    def predictions():  # a generator: the page must not need them all first
        for text in ("Alice in Paris.", "Nothing here."):
            pulled.append(text)
            yield prediction(text, [("PER", "Alice"), ("LOC", "Paris")] if "Alice" in text else [])

    page = render_html(predictions(), types=["ORG", "LOC", "PER"])
    legend = page.split('<div class="legend">')[1].split("</div>")[0]
    assert [k for k in ("LOC", "ORG", "PER") if k in legend] == ["LOC", "ORG", "PER"]  # ORG too, though unused
    assert page.index("LOC") < page.index("ORG") < page.index("PER")  # sorted
    assert [m["text"] for m in parse(page).marks] == ["Alice", "Paris"]
    assert '<div class="summary">2 texts</div>' in page
    assert write_html(tmp_path / "p.html", predictions(), types=["LOC", "PER"]) == 2


def test_a_failure_midway_leaves_the_old_page(tmp_path):
    path = tmp_path / "page.html"
    path.write_text("the old page")

    def failing():
        yield prediction("Alice in Paris.", [("PER", "Alice")])
        raise UserError("texts.txt:2: empty line")

    with pytest.raises(UserError, match="empty line"):
        write_html(path, failing(), types=["PER"])
    assert path.read_text() == "the old page" and sorted(p.name for p in tmp_path.iterdir()) == ["page.html"]
    with pytest.raises(UserError, match="is a directory"):
        write_html(tmp_path, [])


def test_cli_page_shows_the_json_spans_and_escapes_the_text(tmp_path, checkpoint_dir):
    from small_checkpoint import build  # the small random checkpoint: it predicts plenty of entities

    small = build(tmp_path / "small", checkpoint_dir)
    texts = [HOSTILE.replace("\n", " "), "Angela Merkel met Emmanuel Macron in Paris.", "<script>alert(3)</script>",
             "Zoë visited Zürich & Genève."]
    path, page_path = tmp_path / "texts.txt", tmp_path / "page.html"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")

    def infer(*args):
        return subprocess.run([sys.executable, "infer.py", "--checkpoint", str(small), "--file", str(path), *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)

    as_json, as_html = infer("--json"), infer("--html", str(page_path))
    assert as_json.returncode == 0 and as_html.returncode == 0, as_html.stderr
    assert as_html.stdout == "" and as_html.stderr == f"wrote {page_path}: 4 texts\n"
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    page = page_path.read_text(encoding="utf-8")
    parser = parse(page)
    assert parser.texts == texts and "<script" not in page.lower()
    expected = [(i, e["start"], e["end"], e["type"], e["text"]) for i, row in enumerate(rows) for e in row["entities"]]
    got = [(m["doc"], int(m["attrs"]["data-start"]), int(m["attrs"]["data-end"]), m["attrs"]["data-type"], m["text"])
           for m in parser.marks]
    assert expected and got == expected
    assert page.count('class="badge"') == 4
    for row in rows:
        assert f'{html.escape(row["label"])}<span class="p">{row["label_probability"]:.2f}</span>' in page
