"""Reading a checkpoint directory (machinery/reading.py): only its own regular files, and one whole version.

A run directory is replaced whole at every save, so a reader racing `train.py --overwrite` must see the old
version or the new one, never config.json of one and model.safetensors of the other; a FIFO or a device
where a file should be must not hang or flood the reader; a symlink out of the checkpoint is not followed,
except the hub cache's links from a snapshot into its own blobs/.
"""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import ROOT
from small_checkpoint import build

from minimtl import UserError
from minimtl.bert import Bert, BertConfig
from minimtl.machinery.checkpoint import atomic_directory, load_checkpoint, load_predictor, write_model
from minimtl.machinery.download import resolve_weights
from minimtl.machinery.assemble import HeadConfig, build_model
from minimtl.weights import load_encoder

TIMEOUT = 60


def infer(*args):
    return subprocess.run([sys.executable, "infer.py", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT)


def one_line_exit_2(result, *expected):
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.fixture
def run_copy(tmp_path, checkpoint_dir):
    return build(tmp_path / "run", checkpoint_dir)


def test_a_fifo_named_config_json_is_refused_at_once_not_waited_on(run_copy):
    (run_copy / "config.json").unlink()
    os.mkfifo(run_copy / "config.json")
    one_line_exit_2(infer("--checkpoint", run_copy, "Alice went to Paris."), "config.json", "not a regular file")


def test_a_symlink_out_of_the_checkpoint_is_not_followed(run_copy, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(run_copy / "model.safetensors", outside)
    (run_copy / "model.safetensors").symlink_to(outside)
    one_line_exit_2(infer("--checkpoint", run_copy, "Alice went to Paris."), "model.safetensors", "symbolic link")


def test_a_directory_where_a_file_should_be_is_refused(run_copy):
    (run_copy / "vocab.txt").unlink()
    (run_copy / "vocab.txt").mkdir()
    with pytest.raises(UserError, match="vocab.txt: is not a regular file"):
        load_predictor(run_copy)


def hub_cache(tmp_path, source):
    """`source` laid out as the hub's cache stores it: snapshots/REV/FILE -> ../../blobs/NAME."""
    cache = tmp_path / "models--org--tiny"
    snapshot = cache / "snapshots" / "0123abc"
    for path in source.rglob("*"):
        if path.is_file():
            blob = cache / "blobs" / path.relative_to(source).as_posix().replace("/", "_")
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, blob)
            link = snapshot / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


def test_a_hub_cache_snapshot_made_of_links_into_its_blobs_loads(tmp_path, tiny_weights):
    snapshot = hub_cache(tmp_path, tiny_weights)
    assert all(p.is_symlink() for p in snapshot.iterdir())
    encoder = load_encoder(resolve_weights(str(snapshot)))
    assert encoder.config.hidden_size == load_encoder(tiny_weights).config.hidden_size


def test_a_link_from_a_snapshot_to_anywhere_but_its_blobs_is_refused(tmp_path, tiny_weights):
    snapshot = hub_cache(tmp_path, tiny_weights)
    (snapshot / "config.json").unlink()
    (snapshot / "config.json").symlink_to(tiny_weights / "config.json")
    with pytest.raises(UserError, match="config.json: is a symbolic link out of the checkpoint"):
        resolve_weights(str(snapshot))


# --- one version while a save swaps the directory -------------------------------------------------------

def version(directory, tokenizer_dir, hidden, labels):
    """A checkpoint whose config, weights and labels all say which version it is."""
    torch.manual_seed(hidden)
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64)
    model = build_model(Bert(config), HeadConfig(n_labels=len(labels), n_tags=0))
    with atomic_directory(directory) as tmp:
        write_model(tmp, model, {"labels": labels, "tags": None, "max_len": 32, "heads": {}}, tokenizer_dir)
    return directory


SWAPPER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, sys.argv[1])
    from minimtl.machinery.checkpoint import atomic_directory
    out, versions, stop = sys.argv[2], sys.argv[3:5], time.time() + float(sys.argv[5])
    i = 0
    while time.time() < stop:  # a new version every 0.2 s: far more often than any epoch ends
        with atomic_directory(out) as tmp:
            for name in os.listdir(versions[i % 2]):
                os.link(os.path.join(versions[i % 2], name), tmp / name)
        i += 1
        if i == 1:
            print("swapping", flush=True)
        time.sleep(0.2)
""")


def test_a_reader_racing_saves_always_gets_one_whole_version(tmp_path, checkpoint_dir):
    a = version(tmp_path / "a", checkpoint_dir, hidden=32, labels=["x", "y", "z"])
    b = version(tmp_path / "b", checkpoint_dir, hidden=48, labels=["p", "q", "r", "s"])
    out = tmp_path / "run"
    shutil.copytree(a, out)
    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(ROOT), str(out), str(a), str(b), "120"],
                               stdout=subprocess.PIPE, text=True)
    seen = set()
    try:
        assert swapper.stdout.readline() == "swapping\n"
        for _ in range(300):
            model, meta = load_checkpoint(out)  # raises if config.json and model.safetensors disagree
            seen.add((model.bert.config.hidden_size, len(meta["labels"]), model.cls_head.out.out_features))
    finally:
        swapper.kill()
        swapper.communicate()
    assert seen <= {(32, 3, 3), (48, 4, 4)}  # never a mix of the two versions
    assert len(seen) == 2  # and the swaps did happen while it read
