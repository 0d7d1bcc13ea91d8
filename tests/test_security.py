"""Loading a model must not be able to run code, and a checkpoint's metadata must not steer file access.

1. The package and the CLIs never call anything that unpickles or evaluates: no `torch.load`, `pickle` (nor
   `allow_pickle`, `pickle_module`, ...), `marshal`, `shelve`, `eval(`, `exec(`. Checked on the token stream,
   so docstrings that say "never pickle" and `model.eval()` calls are not false alarms.
2. Every path that metadata could name (config.json's "minimtl" section, its training arguments,
   tokenizer_config.json's "vocab_file") is ignored when loading: `infer.py` on a checkpoint whose metadata is
   full of "../../secret.txt" and absolute paths opens files only inside the checkpoint directory. The
   same holds for a `--weights` directory loaded for training. Opened paths are collected in a fresh
   process with an audit hook ('open' events, which cover open(), Path.read_*, os.open and imports), plus
   wrappers around the two native readers that bypass Python's open (safetensors, WordPiece.from_file).
"""

import ast
import io
import json
import site
import os
import subprocess
import sys
import textwrap
import tokenize
from pathlib import Path

import pytest
import torch

from conftest import ROOT

SOURCES = sorted([*(ROOT / "minimtl").rglob("*.py"), ROOT / "train.py", ROOT / "infer.py"])
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}


def unsafe_uses(source):
    """(line, what) for every use of a deserializer that can run code, or of eval/exec."""
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
              if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                                tokenize.DEDENT)]
    found = []
    for i, t in enumerate(tokens):
        before = [tokens[j].string for j in range(max(0, i - 3), i)]
        after = tokens[i + 1].string if i + 1 < len(tokens) else ""
        if t.type == tokenize.NAME:
            if t.string in UNSAFE_MODULES or "pickle" in t.string.lower():  # also allow_pickle=, pickle_module=
                found.append((t.start[0], t.string))
            elif t.string in ("eval", "exec") and after == "(" and before[-1:] != ["."]:  # not model.eval()
                found.append((t.start[0], t.string + "("))
            elif t.string == "load" and before[-2:] == ["torch", "."]:
                found.append((t.start[0], "torch.load"))
            elif t.string == "load" and before[-3:-1] == ["torch", "import"]:
                found.append((t.start[0], "from torch import load"))
            elif t.string == "load" and before[-1:] == ["import"] and "torch" in before:
                found.append((t.start[0], "from torch import load"))
        elif t.type == tokenize.STRING:
            try:
                value = ast.literal_eval(t.string)
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, str) and value.strip() in UNSAFE_MODULES:  # importlib.import_module("pickle")
                found.append((t.start[0], repr(value)))
    return found


def test_scanner_finds_what_it_looks_for():
    planted = textwrap.dedent('''
        """Tensors go through safetensors, never pickle; eval() is not used and nor is torch.load."""
        import pickle
        import marshal, shelve
        from torch import load
        state = torch.load(path)  # and a comment about pickle, which is fine
        np.load(path, allow_pickle=True)
        model.eval()
        eval("1 + 1")
        exec(code)
        importlib.import_module("pickle")
        torch.save(x, f, pickle_module=dill)
    ''')
    found = unsafe_uses(planted)
    assert {what for _, what in found} == {"pickle", "marshal", "shelve", "from torch import load", "torch.load",
                                           "allow_pickle", "eval(", "exec(", "'pickle'", "pickle_module", "dill"}
    assert 2 not in {line for line, _ in found}  # the docstring
    assert 8 not in {line for line, _ in found}  # model.eval()


def test_no_unpickling_or_eval_in_the_package_and_clis():
    assert len(SOURCES) > 10 and ROOT / "train.py" in SOURCES
    found = [f"{path.relative_to(ROOT)}:{line}: {what}"
             for path in SOURCES for line, what in unsafe_uses(path.read_text(encoding="utf-8"))]
    assert not found, "unsafe deserialization or evaluation:\n" + "\n".join(found)


# --- metadata paths -------------------------------------------------------------------------------------

TRACE = r'''
import json, os, runpy, sys
from pathlib import Path

checkpoint, weights, report = sys.argv[1:4]
opened, writes = [], []

# The native readers open files without Python's open(): record what they are asked for.
import safetensors, safetensors.torch, tokenizers.models
_load_file, _safe_open, _WordPiece = safetensors.torch.load_file, safetensors.safe_open, tokenizers.models.WordPiece
def load_file(path, *a, **k):
    opened.append(os.fspath(path))
    return _load_file(path, *a, **k)
def safe_open(path, *a, **k):
    opened.append(os.fspath(path))
    return _safe_open(path, *a, **k)
class WordPiece:
    @staticmethod
    def from_file(vocab, *a, **k):
        opened.append(os.fspath(vocab))
        return _WordPiece.from_file(vocab, *a, **k)
safetensors.torch.load_file, safetensors.safe_open, tokenizers.models.WordPiece = load_file, safe_open, WordPiece

from minimtl.machinery.download import resolve_weights
from minimtl.weights import load_encoder
from minimtl.extensions.family_tokenizers import load_tokenizer

def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path, mode, flags = args
        opened.append(os.fsdecode(path))
        if (mode and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR)):
            writes.append(os.fsdecode(path))
    elif event in ("os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree"):
        writes.append(f"{event} {args[0]}")
sys.addaudithook(hook)

sys.argv = ["infer.py", "--checkpoint", checkpoint, "--json", "Alice visited Paris"]
try:
    runpy.run_path("infer.py", run_name="__main__")
except SystemExit as e:
    assert not e.code, f"infer.py exited with {e.code}"
# What training does with --weights: resolve the directory, build the tokenizer, load the encoder.
directory = resolve_weights(weights)
load_tokenizer(directory)
load_encoder(directory)
sys.addaudithook(lambda *a: None)
Path(report).write_text(json.dumps({"opened": opened, "writes": writes}))
'''

ESCAPES = ["../../secret.txt", "../secret.txt", "secret.txt/../../../secret.txt"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, tiny_weights):
    """A checkpoint and a weights directory whose metadata names files outside them, and those files."""
    from minimtl.bert import Bert
    from minimtl.machinery.checkpoint import atomic_directory, write_model
    from minimtl.bert import BertConfig
    from minimtl.machinery.assemble import HeadConfig, build_model

    root = tmp_path_factory.mktemp("hostile")
    secret = root / "secret.txt"
    secret.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nsecret\n")  # would even work as a vocabulary
    for name in ("a/secret.txt", "a/b/secret.txt"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(secret.read_text())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64)
    model = build_model(Bert(config), HeadConfig(n_labels=2, n_tags=3), ["O", "B-LOC", "I-LOC"])
    paths = {"vocab": ESCAPES[0], "tokenizer": ESCAPES[1], "weights": str(secret), "model": ESCAPES[2],
             "train_args": {"data": ESCAPES[0], "weights": str(secret), "out": ESCAPES[1]}}
    meta = {"labels": ["travel", "music"], "tags": ["O", "B-LOC", "I-LOC"], "max_len": 32, **paths}
    checkpoint = root / "a" / "b" / "ckpt"
    with atomic_directory(checkpoint) as tmp:
        write_model(tmp, model, meta, tiny_weights)
    weights = root / "a" / "b" / "weights"
    weights.mkdir()
    for f in tiny_weights.iterdir():
        (weights / f.name).write_bytes(f.read_bytes())
    for directory in (checkpoint, weights):
        config = json.loads((directory / "config.json").read_text())
        config.update(_name_or_path=ESCAPES[0], vocab_file=ESCAPES[0], tokenizer_file=str(secret))
        (directory / "config.json").write_text(json.dumps(config))
        tok = json.loads((directory / "tokenizer_config.json").read_text())
        tok.update(vocab_file=ESCAPES[0], tokenizer_file=ESCAPES[1], name_or_path=str(secret))
        (directory / "tokenizer_config.json").write_text(json.dumps(tok))
    return checkpoint, weights


def test_metadata_paths_never_lead_outside_the_checkpoint(hostile, tmp_path):
    checkpoint, weights = hostile
    report = tmp_path / "opened.json"
    done = subprocess.run([sys.executable, "-c", TRACE, str(checkpoint), str(weights), str(report)], cwd=ROOT,
                          capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["words"] == ["Alice", "visited", "Paris"]  # it did load and predict
    trace = json.loads(report.read_text())
    assert not trace["writes"], trace["writes"]

    # Where Python itself may read from (lazy imports, /proc for CPU counts): not the data's business.
    system = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages())}
    system |= {Path("/proc"), Path("/sys"), Path("/dev"), ROOT / "minimtl", ROOT / "infer.py"}
    assert Path("/") not in system and ROOT not in system
    allowed = {checkpoint.resolve(), weights.resolve()}
    outside = []
    for name in trace["opened"]:
        path = (ROOT / name).resolve()  # relative paths are relative to the working directory
        if any(path == a or a in path.parents for a in allowed):
            continue
        if path.name == "secret.txt" or not any(path == s or s in path.parents for s in system):
            outside.append(name)
    assert not outside, f"files opened outside the checkpoint and weights directories: {outside}"
    for directory in allowed:
        for name in ("config.json", "model.safetensors", "vocab.txt"):
            assert str(directory / name) in trace["opened"]  # the hook did see the loading
