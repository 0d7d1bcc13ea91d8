import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from batches import batch_of
from minimtl.bio import best_valid_paths, chunks, transition_mask
from minimtl.guards.errors import UserError
from minimtl.extensions.context import windows
from minimtl.inference import spans
from minimtl.machinery.checkpoint import FORMAT_VERSION, load_predictor
from minimtl.machinery.predictor import confident, format_prediction
from small_checkpoint import LABELS, MAX_LEN, TAGS, build

ROOT = Path(__file__).resolve().parents[1]


def constrained_decode(log_probs, tags):  # one sentence: (n, K) -> tag ids
    masks = (torch.tensor(ok) for ok in transition_mask(tags))
    return best_valid_paths(log_probs[None], [log_probs.shape[0]], *masks)[0]


SENTENCE = "Alice Smith flew from Paris to Berlin last summer, then José went to 東京."
LONG = " ".join(["Alice met Bob in Paris and they drove to the old town of Berlin ."] * 10)  # 7 windows


pytestmark = pytest.mark.usefixtures("one_thread")  # small, predictor, one_thread: small_checkpoint.py


def test_schema_one_prediction_per_input(predictor):
    texts = [SENTENCE, "Book a table", LONG]
    preds = predictor.predictions(texts)
    assert [p.text for p in preds] == texts
    for p in preds:
        out = json.loads(json.dumps(p.to_json()))  # JSON-able as it is
        assert set(out) == {"text", "label", "label_probability", "labels", "entities", "words", "tags"}
        assert list(out["labels"]) == sorted(LABELS, key=lambda n: -out["labels"][n])  # most probable first
        assert sum(out["labels"].values()) == pytest.approx(1, abs=1e-3)  # all 3 classes fit in the top 5
        assert out["label"] == next(iter(out["labels"]))
        assert out["label_probability"] == max(out["labels"].values())
        assert len(out["tags"]) == len(out["words"]) and set(out["tags"]) <= set(TAGS)
        for e in out["entities"]:
            assert set(e) == {"type", "text", "start", "end", "confidence", "first_word", "last_word"}
            assert 0 < e["confidence"] <= 1


def test_batching_does_not_change_predictions(predictor):
    # Texts of very different lengths share padded batches; each must come out as if predicted alone.
    together = predictor.predictions([SENTENCE, LONG, "Paris"])
    for text, pred in zip([SENTENCE, LONG, "Paris"], together):
        alone, = predictor.predictions([text])
        assert pred.tags == alone.tags
        assert pred.labels == pytest.approx(alone.labels, abs=1e-5)


def test_one_window_equals_a_direct_forward(predictor):
    pred, = predictor.predictions([SENTENCE])
    words = [w.text for w in pred.words]
    enc = predictor.tokenizer.encode([words], max_len=MAX_LEN)[0]
    assert not enc.truncated and len(enc.input_ids) <= MAX_LEN
    with torch.no_grad():
        out = predictor.model(batch_of(torch.tensor([enc.input_ids]), torch.ones(1, len(enc.input_ids), dtype=torch.long)))
    log_probs = out.ner_logits[0].log_softmax(-1)[enc.first_positions]  # (words, tags)
    ids = constrained_decode(log_probs, TAGS)
    assert pred.tags == [TAGS[k] for k in ids]
    # Each entity's probability by hand: B-X, then I-X on its other words, then a word that is not I-X.
    probs = log_probs.exp()
    expected = []
    for kind, first, last in chunks(pred.tags):
        begin, inside = TAGS.index(f"B-{kind}"), TAGS.index(f"I-{kind}")
        p = probs[first, begin] * probs[first + 1 : last + 1, inside].prod()
        expected.append((kind, first, last, float(p * (1 - probs[last + 1, inside]) if last + 1 < len(ids) else p)))
    assert [(s.type, s.first_word, s.last_word) for s in pred.entities] == [e[:3] for e in expected]
    assert [s.confidence for s in pred.entities] == pytest.approx([e[3] for e in expected], abs=1e-6)
    cls = out.cls_logits[0].softmax(-1)
    assert pred.labels == pytest.approx({name: float(p) for name, p in zip(LABELS, cls)}, abs=1e-6)


def test_sentence_label_of_a_long_text_is_the_mean_over_its_windows(predictor):
    pred, = predictor.predictions([LONG])
    wins = windows(predictor.tokenizer, [w.text for w in pred.words], MAX_LEN, predictor.stride)
    assert len(wins) > 2
    with torch.no_grad():
        probs = [predictor.model(batch_of(torch.tensor([e.input_ids]), torch.ones(1, len(e.input_ids), dtype=torch.long)))
                 .cls_logits[0].softmax(-1) for _, e in wins]
    mean = torch.stack(probs).mean(0)
    assert pred.labels == pytest.approx({name: float(p) for name, p in zip(LABELS, mean)}, abs=1e-5)


def check_alignment(text, pred):
    assert [text[w.start : w.end] for w in pred.words] == [w.text for w in pred.words]
    assert [(e.type, e.first_word, e.last_word) for e in pred.entities] == chunks(pred.tags)
    for e in pred.entities:
        assert text[e.start : e.end] == e.text
        assert (e.start, e.end) == (pred.words[e.first_word].start, pred.words[e.last_word].end)


def test_entities_slice_the_text_exactly(predictor):
    texts = [SENTENCE, "  Zoë  and\tMr. O'Neil\n met in São Paulo (Brazil) — 2019!  ", "Jose\u0301 e\u0301te\u0301"]
    preds = predictor.predictions(texts)
    assert any(p.entities for p in preds)  # random weights, but seeded: the check below is not vacuous
    for text, pred in zip(texts, preds):
        check_alignment(text, pred)


PIECES = list("abcXYZ éÉñüß東京😀👍🏽.,!?-'\"()\u0301\u200b\x00\x07\x1b\t\n\u3000\u00a0")


@settings(max_examples=30, deadline=None)
@given(st.text(st.one_of(st.sampled_from(PIECES), st.characters(exclude_categories=("Cs",))), max_size=60)
       .filter(str.strip))
def test_any_text_aligns(predictor, text):
    pred, = predictor.predictions([text])
    assert len(pred.tags) == len(pred.words)
    check_alignment(text, pred)


def test_ten_thousand_words(predictor):
    words = ["Alice", "went", "to", "Paris", "with", "Bob", "Smith", "yesterday."]
    text = " ".join(words[i % len(words)] for i in range(10_000))
    pred, = predictor.predictions([text])
    assert len(pred.words) == 10_000 + 10_000 // len(words)  # "yesterday." is two words
    assert len(pred.tags) == len(pred.words)
    check_alignment(text, pred)


def test_emoji_and_control_characters_only(predictor):
    emoji, control, zero_width = predictor.predictions(["😀🎉", "\x01\x02\x7f", "\u200b"])
    assert [w.text for w in emoji.words] == ["😀🎉"] and len(emoji.tags) == 1  # one [UNK] word
    for pred in (control, zero_width):  # nothing left after normalising: no words, still a category
        assert pred.words == [] and pred.tags == [] and pred.entities == []
        assert pred.label in LABELS
    assert "\\x01\\x02\\x7f" in format_prediction(control)  # shown escaped, not sent to the terminal


@pytest.mark.parametrize("texts, message", [(["Paris", ""], "text 2 is empty"), ([" \t\n"], "text 1 is empty")])
def test_empty_text_is_a_user_error(predictor, texts, message):
    with pytest.raises(UserError, match=message):
        predictor.predictions(texts)


def test_single_task_checkpoints(tmp_path, checkpoint_dir):
    sentence_only = load_predictor(build(tmp_path / "cls", checkpoint_dir, tags=None))
    token_only = load_predictor(build(tmp_path / "ner", checkpoint_dir, labels=None))
    pred, = sentence_only.predictions([SENTENCE])
    assert set(pred.to_json()) == {"text", "label", "label_probability", "labels", "words"}
    assert "category:" in format_prediction(pred) and "entities" not in format_prediction(pred)
    pred, = token_only.predictions([SENTENCE])
    assert set(pred.to_json()) == {"text", "entities", "words", "tags"}
    assert "category:" not in format_prediction(pred)


def test_format_prediction(predictor):
    pred, none = predictor.predictions([SENTENCE, "😀"])
    lines = format_prediction(pred).splitlines()
    assert lines[0] == SENTENCE
    assert lines[1] == f"  category: {pred.label} ({pred.label_probability:.2f})"
    assert len(lines) == 2 + len(pred.entities) > 2
    for line, e in zip(lines[2:], pred.entities):
        assert line.split()[0] == e.type and f'"{e.text}"' in line and f"{e.start}-{e.end}" in line
        assert line.endswith(f"{e.confidence:.2f}")
    assert len({line.index(f"{e.start}-") for line, e in zip(lines[2:], pred.entities)}) == 1  # aligned
    assert format_prediction(none).splitlines()[-1] == "  (no entities)"


def copy_of(small, directory):
    directory.mkdir()
    for f in small.iterdir():
        (directory / f.name).write_bytes(f.read_bytes())
    return directory


# Each way a checkpoint can be damaged, and what the one-line error must name.
DAMAGE = {
    "not_json": (lambda d: (d / "config.json").write_text("{not json"), "config.json"),
    "version": (lambda d: (d / "config.json").write_text(
        (d / "config.json").read_text().replace(f'"format_version": {FORMAT_VERSION}', '"format_version": 999')), "999"),
    "no_vocab": (lambda d: [(d / name).unlink() for name in ("tokenizer.json", "vocab.txt")], "vocab.txt"),
    "truncated": (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:5000]),
                  "model.safetensors"),
    "no_checkpoint": (shutil.rmtree, "no checkpoint"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_damaged_checkpoint_is_a_one_line_user_error(small, tmp_path, case):
    damage, named = DAMAGE[case]
    damage(copy_of(small, tmp_path / "ckpt"))
    with pytest.raises(UserError) as error:
        load_predictor(tmp_path / "ckpt")
    assert named in str(error.value) and "\n" not in str(error.value)


# --- the command line ---------------------------------------------------------------------------------
# Every run pays ~2 s for importing torch, so all runs start at once, and the damage above is checked
# through the CLI once per kind of error (text, checkpoint, file) rather than once per damage.

def infer(*args):
    """Start `python infer.py ARGS`; `.communicate(stdin)` gives (stdout, stderr)."""
    return subprocess.Popen([sys.executable, "infer.py", *map(str, args)], cwd=ROOT, text=True, encoding="utf-8",
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


CLI_TEXTS = [SENTENCE, "😀🎉 \x01 ok"]


@pytest.fixture(scope="module")
def cli(small, tmp_path_factory):
    """{case: ((stdout, stderr), exit code)} for every command-line run of this file, run in parallel."""
    root = tmp_path_factory.mktemp("cli")
    (root / "latin1.txt").write_bytes("fine\ncaf\xe9\n".encode("latin-1"))
    truncated = copy_of(small, root / "truncated")
    DAMAGE["truncated"][0](truncated)
    runs = {
        "json": (["--checkpoint", small, "--json", *CLI_TEXTS], None),
        "confident": (["--checkpoint", small, "--json", "--min-confidence", "0.3", *CLI_TEXTS], None),
        "stdin": (["--checkpoint", small], "\n".join(CLI_TEXTS) + "\n"),  # no text argument, stdin not a TTY
        "empty": (["--checkpoint", small, "Paris", " \t "], None),
        "truncated": (["--checkpoint", truncated, "Paris"], None),
        "no_file": (["--checkpoint", small, "--file", root / "missing.txt"], None),
        "not_utf8": (["--checkpoint", small, "--file", root / "latin1.txt"], None),
    }
    started = {case: (infer(*args), stdin) for case, (args, stdin) in runs.items()}
    return {case: (p.communicate(stdin), p.returncode) for case, (p, stdin) in started.items()}


@pytest.mark.parametrize("case, named", [("empty", "text 2 is empty"), ("truncated", "model.safetensors"),
                                         ("no_file", "missing.txt: file not found"),
                                         ("not_utf8", "latin1.txt:2: not UTF-8")])
def test_cli_errors_are_one_line(cli, case, named):
    (stdout, stderr), returncode = cli[case]
    assert returncode == 2 and stdout == ""
    assert len(stderr.splitlines()) == 1 and stderr.startswith("error: ") and named in stderr, stderr


def test_cli_output_is_what_predict_gives(cli, predictor):
    expected = predictor.predictions(CLI_TEXTS)
    (out, err), returncode = cli["json"]
    assert returncode == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [p.to_json() for p in expected]
    (out, err), returncode = cli["stdin"]
    assert returncode == 0, err
    assert out == "\n\n".join(format_prediction(p) for p in expected) + "\n"


def test_cli_min_confidence_drops_the_entities_below_it(cli, predictor):
    expected = [confident(p, 0.3) for p in predictor.predictions(CLI_TEXTS)]
    assert sum(len(p.entities) for p in expected) < sum(len(p.entities) for p in predictor.predictions(CLI_TEXTS))
    (out, err), returncode = cli["confident"]
    assert returncode == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [p.to_json() for p in expected]
    assert all(s.confidence >= 0.3 for p in expected for s in p.entities)


def test_min_confidence_leaves_tags_that_agree_with_the_entities(predictor):
    # Issue 38: the dropped entities' tags stayed in "tags", so a reader of the tags still saw them.
    for before in predictor.predictions(CLI_TEXTS):
        after = confident(before, 0.3)
        assert chunks(after.tags) == [(s.type, s.first_word, s.last_word) for s in after.entities]
        assert len(after.tags) == len(before.tags)
