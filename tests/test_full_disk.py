"""A full disk is one line naming the place, at every write path (issue 37, class 2): a run's checkpoint and
resume state, its feature cache file, infer.py --html, a run's results.

Each disk here is real and really full: a small tmpfs, mounted for the test (which needs root, and is skipped
where mounting is not allowed). Only the results' path is reached by hand (a stand-in for the full disk),
since a disk that fills between the last epoch's save and the results is a matter of timing.
"""

import errno
import os
import subprocess
import sys

import pytest
from conftest import ROOT

import minimtl.machinery.run as run_module
from minimtl import UserError
from minimtl.machinery.run import train
from minimtl.machinery.settings import RunConfig

QUIET = lambda line: None  # noqa: E731


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs: enough for a folder and a few small files, too little for any checkpoint."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("a tmpfs cannot be mounted here (it needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def one_line_exit_2(result):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_a_full_disk_at_the_first_save_is_one_line_naming_the_run(tiny_data, tiny_weights, full_disk):
    out = full_disk / "run"
    result = subprocess.run([sys.executable, "train.py", "--data", str(tiny_data), "--weights", str(tiny_weights),
                             "--out", str(out), "--epochs", "1", "--batch-size", "16"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    line = one_line_exit_2(result)
    assert line.startswith(f"error: {out}: cannot save epoch 1 (No space left on device)"), line
    assert not any(p.name.startswith(".run.tmp-") for p in full_disk.iterdir())  # the half-written version is gone


def test_a_full_disk_under_the_feature_cache_names_its_folder(tiny_data, tiny_weights, full_disk, monkeypatch):
    # The cache goes on disk only where half the free space holds it (storage.cache_place); here it is put
    # there anyway, as if another program had filled the disk after that check.
    monkeypatch.setattr(run_module, "cache_place", lambda *args: "disk")
    cfg = RunConfig(data=[str(tiny_data)], weights=str(tiny_weights), out=str(full_disk / "run"), epochs=1,
                    freeze=["backbone"], batch_size=16)
    with pytest.raises(UserError) as error:
        train(cfg, log=QUIET)
    assert str(error.value) == f"cannot write the feature cache in {full_disk} (No space left on device): free " \
                               "space there, or give --feature-cache off"


def test_a_full_disk_under_an_html_page_is_one_line_and_leaves_nothing(small, full_disk):
    page = full_disk / "predictions.html"
    filler = full_disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # every block taken
        try:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    result = subprocess.run([sys.executable, "infer.py", "--checkpoint", str(small), "--html", str(page),
                             "Alice flew to Paris"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert one_line_exit_2(result) == f"error: {page}: cannot write (No space left on device)"
    assert sorted(os.listdir(full_disk)) == ["filler"]


def test_a_full_disk_when_the_results_are_written_says_the_checkpoint_is_whole(tiny_data, tiny_weights, tmp_path,
                                                                              monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(run_module, "write_json", disk_full)
    out = tmp_path / "run"
    cfg = RunConfig(data=[str(tiny_data)], weights=str(tiny_weights), out=str(out), epochs=1, batch_size=16)
    with pytest.raises(UserError) as error:
        train(cfg, log=QUIET)
    assert str(error.value) == f"{out}: cannot write the run's test results (No space left on device); its best " \
                               "checkpoint is saved there, whole, for infer.py"


def test_a_safetensors_write_error_is_raised_as_the_os_error_it_reports(monkeypatch, tmp_path):
    # Without a full disk of its own (no root): what safetensors raises there, as it words it.
    import minimtl.machinery.rundir as rundir
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    monkeypatch.setattr(rundir, "save_file", full)
    with pytest.raises(OSError) as error:
        rundir.save_tensors({}, tmp_path / "x.safetensors")
    assert error.value.errno == errno.ENOSPC and error.value.filename == str(tmp_path / "x.safetensors")
