"""Input built to break the machine, not merely wrong: each class of it is refused in one line, at its root.

* readers that recurse or echo: JSON nested 100,000 deep, a 1 MB word, terminal escapes in a file name;
* writing where it must not: `--html` at a symlink, a device, a FIFO, and temporaries a SIGKILL left;
* silent misreads: IOB1 tags (read as BIO, said once in the log) and a CSV written label,text (refused);
* resume state that does not fit the model: every tensor and random state is checked before the first step;
* small holes: a label index written '²', a CSV text longer than Python's csv field limit;
* the operating system saying no: stdout on a full device or closed, stdin closed or a directory.

The CLI promises run the real commands in a subprocess: exit code 2, one `error: ...` line, no traceback.
"""

import csv
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT
from hypothesis import given, settings, strategies as st
from safetensors.torch import load_file, save_file

from minimtl.machinery.settings import RunConfig
from minimtl.guards.errors import MAX_DEPTH, MAX_LINE, UserError, parse_json, quote, read_json
from minimtl.machinery.data import load_data, load_split
from minimtl.bio import chunks
from minimtl.machinery.formats import Example
from minimtl.machinery.tag_schemes import as_bio
from minimtl.machinery.html import write_html
from minimtl.machinery.resume import resume_config
from minimtl.machinery.run import train

MEGABYTE_WORD = "x" * 1_000_000


def write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path


def error_of(call, *args):
    with pytest.raises(UserError) as caught:
        call(*args)
    return str(caught.value)


# --- 1. readers that recurse or echo ---------------------------------------------------------------------

JSONL_LINE = '{"tokens": ["Alice", "visited", "Paris"], "tags": ["B-PER", "O", "B-LOC"], "label": "travel"}'


@pytest.mark.parametrize("nested", ["[" * 100_000, '{"a":' * 100_000, "[" * 100_000 + "]" * 100_000,
                                    '{"tokens": ' + "[" * 5000 + "]" * 5000 + "}"],
                         ids=["open-arrays", "open-objects", "closed-arrays", "inside-a-record"])
def test_deep_json_line_is_one_error_naming_the_line(tmp_path, nested):
    write(tmp_path / "train.jsonl", JSONL_LINE + "\n" + nested + "\n")
    write(tmp_path / "dev.jsonl", JSONL_LINE + "\n")
    message = error_of(load_data, tmp_path)
    assert message.startswith(f"{tmp_path / 'train.jsonl'}:2: ") and f"deeper than {MAX_DEPTH} levels" in message
    assert len(message) < 300


def test_deep_config_json_is_one_error(tmp_path):
    path = write(tmp_path / "config.json", '{"hidden_size": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert error_of(read_json, path).startswith(f"{path}: JSON nested deeper than {MAX_DEPTH} levels")


def test_nesting_up_to_the_limit_and_brackets_inside_strings_are_fine():
    value = parse_json("[" * MAX_DEPTH + "1" + "]" * MAX_DEPTH, "f")
    for _ in range(MAX_DEPTH):
        value = value[0]
    assert value == 1
    text = json.dumps({"text": "[{" * 10_000, "quote": 'a "[" b \\ ['})
    assert parse_json(text, "f") == json.loads(text)
    with pytest.raises(UserError, match=f"deeper than {MAX_DEPTH}"):
        parse_json("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "f")


def test_the_depth_count_reads_escapes_and_is_one_pass():
    assert parse_json('["\\\\", "\\"[", ' + "[" * 99 + "]" * 99 + "]", "f")[:2] == ["\\", '"[']
    with pytest.raises(UserError, match="deeper than"):
        parse_json('["\\\\", ' + "[" * 100 + "]" * 100 + "]", "f")  # the string ends after its escaped \\
    # A string of 200,000 escaped quotes that never ends: a backtracking scan of it is quadratic.
    hostile = "[" * 50 + '"' + '\\"' * 200_000 + "]" * 50 + "{}" * 30
    with pytest.raises(UserError, match="not valid JSON .Unterminated string"):
        parse_json(hostile, "f")


def test_a_number_too_long_to_convert_is_one_error(tmp_path):
    write(tmp_path / "classes.txt", "travel\nmusic\n")
    write(tmp_path / "train.jsonl", '{"text": "fly home", "label": ' + "1" * 5000 + "}\n")
    write(tmp_path / "dev.jsonl", '{"text": "fly home", "label": 0}\n')
    assert error_of(load_data, tmp_path).startswith(f"{tmp_path / 'train.jsonl'}:1: a JSON number of more digits")


@pytest.mark.parametrize("files, where", [
    ({"train.txt": "Alice B-PER\n" + MEGABYTE_WORD + "\n", "dev.txt": "Bob B-PER\n"}, "train.txt:2"),
    ({"train.txt": f"Alice {MEGABYTE_WORD}\n", "dev.txt": "Bob B-PER\n"}, "train.txt:1"),  # a 1 MB tag
    ({"classes.txt": "travel\nmusic\n", "train.csv": f"fly home,{MEGABYTE_WORD}\n", "dev.csv": "a,travel\n"},
     "train.csv:1"),
    ({"classes.txt": f"travel\n{MEGABYTE_WORD}\n{MEGABYTE_WORD}\n", "train.csv": "a,0\n", "dev.csv": "b,0\n"},
     "classes.txt:3"),
], ids=["word-without-tag", "tag", "csv-label", "class-listed-twice"])
def test_a_megabyte_of_user_text_is_quoted_as_a_short_excerpt(tmp_path, files, where):
    for name, content in files.items():
        write(tmp_path / name, content)
    message = error_of(load_data, tmp_path)
    assert message.startswith(f"{tmp_path / where}: ") and "(1,000,000 characters)" in message
    assert len(message) < 300


def test_error_lines_escape_what_a_terminal_would_act_on():
    label = "a\x1b[2J\x07b"
    message = str(UserError(f"label {quote(label)} unknown \x1b[31m red", path="texts\n\u202e.txt", line=3))
    assert message.isprintable() and "\n" not in message
    assert message == "texts\\n\\u202e.txt:3: label 'a\\x1b[2J\\x07b' unknown \\x1b[31m red"


@settings(max_examples=200, deadline=None)
@given(text=st.text(), path=st.text(max_size=300), line=st.none() | st.integers(1, 10**9))
def test_any_error_line_is_one_bounded_printable_line(text, path, line):
    message = str(UserError(f"{text} and {quote(text)}", path=path, line=line))
    assert message.isprintable() and len(message) <= MAX_LINE + 5
    assert len(quote(text)) <= len(repr("\U000e0001")) * 40 + len("... (1,000,000,000 characters)")


def test_a_long_message_keeps_both_ends():
    message = str(UserError("the start " + "y" * 10**6 + " the end"))
    assert len(message) <= MAX_LINE + 5 and message.startswith("the start") and message.endswith("the end")


# --- 3. silent misreads -----------------------------------------------------------------------------------

# The first sentences of the original CoNLL-2003 eng.train, in IOB1, and the same in BIO.
IOB1_CONLL = ("-DOCSTART- -X- O O\n\nEU NNP I-NP I-ORG\nrejects VBZ I-VP O\nGerman JJ I-NP I-MISC\n"
              "call NN I-NP O\n\nPeter NNP I-NP I-PER\nBlackburn NNP I-NP I-PER\n\n"
              "BRUSSELS NNP I-NP I-LOC\n1996-08-22 CD I-NP O\n\n"
              "Japan NNP I-NP I-LOC\nChina NNP I-NP B-LOC\nKorea NNP I-NP B-LOC\nand CC O O\nEU NNP I-NP I-ORG\n")
BIO_TAGS = [("B-ORG", "O", "B-MISC", "O"), ("B-PER", "I-PER"), ("B-LOC", "O"),
            ("B-LOC", "B-LOC", "B-LOC", "O", "B-ORG")]


def test_iob1_conll_is_read_as_bio_and_said_once(tmp_path):
    write(tmp_path / "train.txt", IOB1_CONLL)
    write(tmp_path / "dev.txt", "Bonn I-LOC\nand O\nParis I-LOC\nB-LOC B-LOC\n")
    write(tmp_path / "test.txt", "Bonn B-LOC\nsaw O\n")  # BIO already: left as it is
    splits = load_data(tmp_path)
    assert [ex.tags for ex in splits.train] == BIO_TAGS
    assert splits.dev[0].tags == ("B-LOC", "O", "B-LOC", "B-LOC")
    assert splits.test[0].tags == ("B-LOC", "O")
    assert splits.notes == ["train.txt, dev.txt: IOB1 tags (entities open with I-, as in the original CoNLL-2003 "
                            "release), read as BIO"]
    assert load_data(tmp_path / "train.txt").notes[0].startswith(f"{tmp_path / 'train.txt'}: IOB1 tags")
    examples, description = load_split(tmp_path / "train.txt")
    assert [ex.tags for ex in examples] == BIO_TAGS and "IOB1" in description


def test_bio_with_a_stray_i_opener_reads_it_as_b_and_says_how_many(tmp_path):
    write(tmp_path / "train.txt", "Alice B-PER\nvisited O\nParis I-LOC\n\nBob B-PER\nI-PER I-PER\nEU I-ORG\n")
    write(tmp_path / "dev.txt", "Eve B-PER\n")
    splits = load_data(tmp_path)
    # The file stays BIO (its entities open with B- after O); the strays open entities as seqeval reads them.
    assert [ex.tags for ex in splits.train] == [("B-PER", "O", "B-LOC"), ("B-PER", "I-PER", "B-ORG")]
    assert splits.dev[0].tags == ("B-PER",)
    assert splits.notes == ["train.txt: 2 entities open with I- after O or another type; read as B-, which is "
                            "how seqeval reads them (the entities do not change)"]
    assert [chunks(ex.tags) for ex in splits.train] == [[("PER", 0, 0), ("LOC", 2, 2)],
                                                         [("PER", 0, 1), ("ORG", 2, 2)]]


SPANS = st.lists(st.tuples(st.integers(0, 3), st.integers(1, 3), st.sampled_from(["PER", "LOC"])), max_size=5)


def spans_to_tags(spans, iob1):
    """A sentence of gaps and entities (gap length, entity length, type), tagged as BIO or as IOB1."""
    tags, before = [], ""
    for gap, length, kind in spans:
        tags += ["O"] * gap
        opener = "B" if not iob1 or (gap == 0 and before == kind) else "I"
        tags += [f"{opener}-{kind}"] + [f"I-{kind}"] * (length - 1)
        before = kind
    return tuple(tags) or ("O",)


@settings(max_examples=300, deadline=None)
@given(st.lists(SPANS, min_size=1, max_size=6))
def test_iob1_and_bio_of_the_same_entities_read_the_same(sentences):
    bio = [Example(tuple("w" * len(spans_to_tags(s, False))), spans_to_tags(s, False)) for s in sentences]
    iob1 = [Example(ex.words, spans_to_tags(s, True)) for ex, s in zip(bio, sentences)]
    assert as_bio(bio) == (bio, False, 0)  # BIO is never converted
    converted, was_iob1, _ = as_bio(iob1)
    assert converted == bio and was_iob1 == any(sentences)


SWAPPED = "".join(f"{label},{text}\n" for label, text in [
    ("travel", "book a flight to Paris"), ("music", "play some jazz please"), ("travel", "fly me home"),
    ("music", "put on the new album"), ("weather", "will it rain tomorrow"), ("travel", "find a cheap hotel")])


@pytest.mark.parametrize("content, fragment", [
    (SWAPPED, "the columns look swapped: the second column, read as labels, holds 6 different texts"),
    ("label,text\n" + SWAPPED, "the header is label,text: write the columns as text,label"),
], ids=["no-header", "header"])
def test_a_label_first_csv_is_refused(tmp_path, content, fragment):
    write(tmp_path / "train.csv", content)
    write(tmp_path / "dev.csv", "fly home,travel\n")
    message = error_of(load_data, tmp_path)
    assert message.startswith(f"{tmp_path / 'train.csv'}") and fragment in message


def test_csv_with_labels_of_several_words_is_not_taken_for_swapped(tmp_path):
    write(tmp_path / "train.csv", "book a flight,air travel\nplay jazz,live music\nfly home,air travel\n"
                                  "rain,weather\n")  # labels of several words, texts as varied: no swap
    write(tmp_path / "dev.csv", "Paris,city\n")
    assert [ex.label for ex in load_data(tmp_path).train] == ["air travel", "live music", "air travel", "weather"]


# --- 5. smaller holes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("label", ["\u00b2", "\u0663", "1" * 5000],
                         ids=["superscript-2", "arabic-indic-3", "5000-digits"])
def test_a_label_that_is_no_ascii_index_is_one_error(tmp_path, label):
    write(tmp_path / "classes.txt", "travel\nmusic\n")
    write(tmp_path / "train.csv", f"fly home,travel\nplay jazz,{label}\n")
    write(tmp_path / "dev.csv", "fly home,1\n")
    message = error_of(load_data, tmp_path)
    assert message.startswith(f"{tmp_path / 'train.csv'}:2: label ") and "nor an index 0-1" in message


def test_an_index_with_leading_zeros_is_still_an_index(tmp_path):
    write(tmp_path / "classes.txt", "travel\nmusic\n")
    write(tmp_path / "train.csv", "fly home,travel\nplay jazz," + "0" * 5000 + "1\n")
    write(tmp_path / "dev.csv", "fly home,00\n")
    splits = load_data(tmp_path)
    assert [ex.label for ex in splits.train + splits.dev] == ["travel", "music", "travel"]


def test_a_csv_text_longer_than_the_csv_field_limit_is_read(tmp_path):
    long_text = " ".join(["word"] * 60_000)  # 300,000 characters: over Python's default 131,072
    write(tmp_path / "train.csv", f'text,label\n"{long_text}",travel\nplay jazz,music\n')
    write(tmp_path / "dev.csv", "fly home,travel\n")
    before = csv.field_size_limit()
    splits = load_data(tmp_path)
    assert len(splits.train[0].words) == 60_000 and csv.field_size_limit() == before


# --- 2. writing where it must not (--html PATH) -----------------------------------------------------------

PAGE = [{"text": "Alice in Paris.", "entities": [{"type": "PER", "start": 0, "end": 5, "confidence": 0.9}]}]


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_symlink_is_refused_and_left_pointing_where_it_did(tmp_path):
    target = write(tmp_path / "mine.html", "my own page")
    (tmp_path / "page.html").symlink_to(target)
    assert "is a symbolic link" in error_of(write_html, tmp_path / "page.html", PAGE)
    assert (tmp_path / "page.html").is_symlink() and target.read_text() == "my own page"
    (tmp_path / "dangling.html").symlink_to(tmp_path / "nowhere")
    assert "is a symbolic link" in error_of(write_html, tmp_path / "dangling.html", PAGE)
    assert listing(tmp_path) == ["dangling.html", "mine.html", "page.html"]


def test_a_fifo_is_refused_and_stays_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    assert "is a FIFO, not a regular file" in error_of(write_html, tmp_path / "pipe", PAGE)
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe").st_mode) and listing(tmp_path) == ["pipe"]


def test_a_device_is_refused_and_stays_a_device(tmp_path):
    null = tmp_path / "null"
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # what /dev/null is
    except PermissionError:
        pytest.skip("making a device node needs root")
    assert "is a device, not a regular file" in error_of(write_html, null, PAGE)
    assert stat.S_ISCHR(os.lstat(null).st_mode) and listing(tmp_path) == ["null"]


def test_a_replaced_page_keeps_its_permissions(tmp_path):
    path = write(tmp_path / "page.html", "old")
    path.chmod(0o600)
    assert write_html(path, PAGE) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and "Alice" in path.read_text(encoding="utf-8")
    assert listing(tmp_path) == ["page.html"]


@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError, OSError])
def test_any_exception_midway_removes_the_temporary(tmp_path, failure):
    path = write(tmp_path / "page.html", "old")

    def failing():
        yield PAGE[0]
        raise failure(28, "No space left on device") if failure is OSError else failure()

    with pytest.raises(UserError if failure is OSError else failure):
        write_html(path, failing())
    assert path.read_text() == "old" and listing(tmp_path) == ["page.html"]


def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", ""])
    p.wait()
    return p.pid  # reaped: no process has it now (a new one could, much later: not within this test)


def test_temporaries_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    dead = tmp_path / f".page.html.tmp-{dead_pid()}"
    live = tmp_path / f".page.html.tmp-{os.getppid()}"
    other = tmp_path / f".notes.txt.tmp-{dead_pid()}"  # another file's: not this write's business
    for folder in (dead, live, other):
        write(folder / "page.html", "half a page")
    write_html(tmp_path / "page.html", PAGE)
    assert listing(tmp_path) == sorted([live.name, other.name, "page.html"])


def test_a_page_killed_midway_leaves_a_temporary_the_next_write_removes(tmp_path):
    path = write(tmp_path / "page.html", "old")
    script = ("import sys, time\nfrom minimtl.machinery.html import write_html\n"
              "def slow():\n    yield {'text': 'Alice'}\n    print('started', flush=True)\n    time.sleep(600)\n"
              f"write_html({str(path)!r}, slow())\n")
    p = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "started\n"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert listing(tmp_path) == sorted([f".page.html.tmp-{p.pid}", "page.html"]) and path.read_text() == "old"
    write_html(path, PAGE)
    assert listing(tmp_path) == ["page.html"] and "Alice" in path.read_text(encoding="utf-8")


# --- 4. resume state that does not fit the model ----------------------------------------------------------

def edit_tensors(file, edit):
    def damage(run):
        tensors = load_file(run / "resume" / file)
        edit(tensors)
        save_file(tensors, run / "resume" / file)
    return damage


def first(tensors, kind):
    return next(k for k in sorted(tensors) if k.endswith(":" + kind))


def set_first(kind, change):
    return lambda t: t.update({first(t, kind): change(t[first(t, kind)])})


def edit_state(edit):
    def damage(run):
        path = run / "resume" / "state.json"
        state = json.loads(path.read_text())
        edit(state)
        path.write_text(json.dumps(state))
    return damage


OPTIMIZER, WEIGHTS, STATE = "optimizer.safetensors", "model.safetensors", "state.json"
RESUME_DAMAGE = {
    "torch-rng-truncated": (OPTIMIZER, "'torch_rng' should be 5,056 bytes",
                            edit_tensors(OPTIMIZER, lambda t: t.update(torch_rng=t["torch_rng"][:100].clone()))),
    "torch-rng-float": (OPTIMIZER, "'torch_rng' should be 5,056 bytes",
                        edit_tensors(OPTIMIZER, lambda t: t.update(torch_rng=t["torch_rng"].float()))),
    "torch-rng-missing": (OPTIMIZER, "not missing", edit_tensors(OPTIMIZER, lambda t: t.pop("torch_rng"))),
    "torch-rng-random-bytes": (OPTIMIZER, "'torch_rng' is not a torch random state", edit_tensors(
        OPTIMIZER, lambda t: t.update(torch_rng=torch.randint(0, 256, t["torch_rng"].shape, dtype=torch.uint8)))),
    "moment-one-row-longer": (OPTIMIZER, "should be float32 of shape", edit_tensors(
        OPTIMIZER, set_first("exp_avg", lambda v: torch.cat([v, v[:1]])))),
    "moment-nan": (OPTIMIZER, "holds NaN or infinite values", edit_tensors(
        OPTIMIZER, set_first("exp_avg", lambda v: torch.full_like(v, float("nan"))))),
    "moment-integers": (OPTIMIZER, "should be float32 of shape", edit_tensors(
        OPTIMIZER, set_first("exp_avg", lambda v: v.long()))),
    "second-moment-negative": (OPTIMIZER, "holds negative values", edit_tensors(
        OPTIMIZER, set_first("exp_avg_sq", lambda v: -1 - v))),
    "moment-missing": (OPTIMIZER, "lacks exp_avg_sq", edit_tensors(
        OPTIMIZER, lambda t: t.pop(first(t, "exp_avg_sq")))),
    "step-a-vector": (OPTIMIZER, "should be a step count", edit_tensors(
        OPTIMIZER, set_first("step", lambda v: torch.stack([v, v])))),
    "step-nan": (OPTIMIZER, "should be a step count", edit_tensors(
        OPTIMIZER, set_first("step", lambda v: torch.tensor(float("nan"))))),
    "unknown-kind": (OPTIMIZER, "is no part of AdamW's state", edit_tensors(
        OPTIMIZER, lambda t: t.update({first(t, "step").replace(":step", ":momentum"): t[first(t, "step")].clone()}))),
    "weight-one-row-longer": (WEIGHTS, "should be float32 of shape", edit_tensors(
        WEIGHTS, lambda t: t.update({k: torch.cat([v, v[:1]]) for k, v in list(t.items())[:1]}))),
    "weight-infinite": (WEIGHTS, "holds NaN or infinite values", edit_tensors(
        WEIGHTS, lambda t: t.update({k: torch.full_like(v, float("inf")) for k, v in list(t.items())[:1]}))),
    "python-rng-truncated": (STATE, "'python_rng' should be [version, 625 integers", edit_state(
        lambda s: s["python_rng"].__setitem__(1, s["python_rng"][1][:100]))),
    "python-rng-index-out-of-range": (STATE, "'python_rng' is not a random state", edit_state(
        lambda s: s["python_rng"][1].__setitem__(-1, 700))),
    "python-rng-gauss-a-string": (STATE, "'python_rng' should be", edit_state(
        lambda s: s["python_rng"].__setitem__(2, "0.5"))),
    "numpy-rng-truncated": (STATE, "'numpy_rng' should be [name, 624 integers", edit_state(
        lambda s: s["numpy_rng"].__setitem__(1, s["numpy_rng"][1][:10]))),
    "numpy-rng-key-negative": (STATE, "'numpy_rng' should be", edit_state(
        lambda s: s["numpy_rng"][1].__setitem__(0, -1))),
    "numpy-rng-other-generator": (STATE, "'numpy_rng' is not a random state", edit_state(
        lambda s: s["numpy_rng"].__setitem__(0, "PCG64"))),
    "numpy-rng-no-position": (STATE, "'numpy_rng' should be", edit_state(lambda s: s["numpy_rng"].pop(2))),
    "history-not-records": (STATE, "'epoch', 'best_epoch' and 'history' do not agree", edit_state(
        lambda s: s.update(history=[1]))),
}


def files_of(folder):
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", RESUME_DAMAGE)
def test_damaged_resume_state_is_one_error_naming_the_file_before_any_step(interrupted_run, tmp_path, name):
    file, fragment, damage = RESUME_DAMAGE[name]
    run = tmp_path / "run"
    shutil.copytree(interrupted_run, run)
    damage(run)
    before = files_of(run)
    steps = []
    message = error_of(lambda: train(resume_config(run), log=steps.append, resume=True))
    assert message.startswith(f"{run / 'resume' / file}: ") and fragment in message, message
    assert not any(line.startswith("epoch ") for line in steps) and files_of(run) == before


def test_an_undamaged_copy_resumes_to_what_the_uninterrupted_run_gives(interrupted_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(interrupted_run, run)
    cfg = resume_config(run)
    whole = train(RunConfig(**{**cfg.__dict__, "out": str(tmp_path / "whole")}), log=lambda line: None)
    assert train(cfg, log=lambda line: None, resume=True) == whole


def test_a_saved_setting_of_the_wrong_type_with_a_none_default_is_one_error(interrupted_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(interrupted_run, run)
    edit_state(lambda s: s["config"].update(epochs="3"))(run)
    assert "setting 'epochs' should be int" in error_of(resume_config, run)


# --- 6. the operating system says no (infer.py) ------------------------------------------------------------

def shell(command, **env):
    """`command` run by bash in the repository, its redirections as written; (exit code, stdout, stderr)."""
    r = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=240,
                       env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    return r.returncode, r.stdout, r.stderr


def assert_one_error_line(result, fragment):
    code, stdout, stderr = result
    assert code == 2 and "Traceback" not in stdout + stderr and "Exception ignored" not in stderr, result
    assert len(stderr.splitlines()) == 1 and stderr.startswith("error: ") and fragment in stderr, result


@pytest.mark.parametrize("redirect, fragment", [
    ('"Alice visited Paris" > /dev/full', "error: writing the results: No space left on device"),
    ('--json --file - < {texts} > /dev/full', "No space left on device"),
    ('--evaluate {data} > /dev/full', "No space left on device"),
    ("--file - <&-", "error: stdin is closed"),
    ("<&-", "error: no text: stdin is closed"),
    ('"Alice visited Paris" >&-', "error: stdout is closed"),
    ("--file /proc/self/mem", "/proc/self/mem: cannot read (Input/output error)"),
])
def test_infer_says_in_one_line_what_the_system_refused(small, tmp_path, redirect, fragment):
    texts = write(tmp_path / "texts.txt", "Alice visited Paris\n" * 2000)
    data = write(tmp_path / "data.jsonl", '{"tokens": ["Alice", "visited", "Paris"], "tags": ["B-PER", "O", '
                                          '"B-LOC"], "label": "travel"}\n')
    command = f"exec {sys.executable} infer.py --checkpoint {small} " + redirect.format(texts=texts, data=data)
    assert_one_error_line(shell(command), fragment)


def test_html_into_a_symlink_from_the_cli_is_one_line(small, tmp_path):
    target = write(tmp_path / "mine.html", "my page")
    (tmp_path / "page.html").symlink_to(target)
    result = shell(f"exec {sys.executable} infer.py --checkpoint {small} --html {tmp_path / 'page.html'} Alice")
    assert_one_error_line(result, f"{tmp_path / 'page.html'}: is a symbolic link")
    assert (tmp_path / "page.html").is_symlink() and target.read_text() == "my page"


def test_training_on_iob1_conll_says_so_once_and_learns_bio(tiny_weights, tmp_path):
    for split in ("train", "dev"):
        write(tmp_path / "data" / f"{split}.txt", IOB1_CONLL)
    code, stdout, stderr = shell(f"exec {sys.executable} train.py --data {tmp_path / 'data'} --weights {tiny_weights} "
                                 f"--out {tmp_path / 'run'} --epochs 1 --batch-size 8 --device cpu")
    assert code == 0, stderr
    notes = [line for line in stdout.splitlines() if "IOB1" in line]
    assert notes == ["note: data: train.txt, dev.txt: IOB1 tags (entities open with I-, as in the original "
                     "CoNLL-2003 release), read as BIO"], stdout
    tags = json.loads((tmp_path / "run" / "config.json").read_text())["minimtl"]["tags"]
    assert tags == ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER"]
