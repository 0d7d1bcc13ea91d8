"""The predictions page: everything escaped, nothing fetched or run, and the spans read back exactly."""

from html.parser import HTMLParser

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
            self.current = {"attrs": attrs, "text": ""}
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
