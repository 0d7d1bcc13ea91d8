"""Pack what a GPU check needs and git does not track into one folder, and unpack it on the GPU machine.

    python scripts/gpu_pack.py                          # writes gpu_pack/ (git-ignored) at the repo root
    python scripts/gpu_pack.py --restore DIR            # on the GPU machine: float32 weights in DIR (--weights DIR)
    python scripts/gpu_pack.py --verify                 # every file of gpu_pack/ against its manifest
    python scripts/gpu_pack.py --exec SCRIPT [ARGS...]  # SCRIPT as __main__, minimtl's default-weights check
                                                        # accepting a restored copy (MINIMTL_GPU_RESTORED_DEFAULT)

The pack (scripts/gpu_check.sh reads it; at most --budget-mib, 60 MiB by default, or it fails):
  weights/NAME/model.fp16.safetensors   the checkpoint's float32 tensors in float16 (other dtypes as they are);
                                        its metadata says which tensors were float32 and the source's sha256
  weights/NAME/{config.json, tokenizer files, 1_Pooling/}   copied as they are
  data/snips/{train,dev,test}/{seq.in,seq.out,label}        as in ../shared/data
  data/conll2003/{train,dev,test}.txt, data/ag_news/{train,dev,test}.csv + classes.txt
  manifest.json                         sha256 and bytes of every file, the totals, and what was taken of each
                                        data split (all of it unless the budget forced a deterministic subsample
                                        of the training splits: whole CoNLL documents, SNIPS sentences, CSV rows)

Restoring turns the float16 tensors back into float32 (exactly the float16-rounded originals) and writes them as
model.safetensors beside copies of the other files, after checking every file of the pack against its sha256.
Tensors go through safetensors only (no pickle). Besides torch and safetensors it needs minimtl's sha256 and, for
--exec and the pytest plugin (`-p gpu_pack` with scripts/ on PYTHONPATH), which look minimtl's default-weights
table up at run time.
"""

import argparse
import json
import os
import random
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's minimtl
from minimtl.machinery.download import sha256  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PACK = ROOT / "gpu_pack"
DEFAULT_WEIGHTS = ROOT / "weights" / "all-MiniLM-L6-v2"
DEFAULT_DATA = ROOT.parent / "shared" / "data"
WEIGHTS_FILE, PACKED_WEIGHTS = "model.safetensors", "model.fp16.safetensors"
# Besides the tensors: what a checkpoint directory may hold that loading reads (tokenization, pooling).
CHECKPOINT_FILES = ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "merges.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model", "1_Pooling/config.json")
DATASETS = {  # name -> (format, files or split folders)
    "snips": ("snips", ("train", "dev", "test")),
    "conll2003": ("conll", ("train.txt", "dev.txt", "test.txt")),
    "ag_news": ("csv", ("train.csv", "dev.csv", "test.csv", "classes.txt")),
}
SNIPS_FILES = ("seq.in", "seq.out", "label")
FP16_MAX = 65504.0
MiB = 2**20


class PackError(Exception):
    """A pack that cannot be made or trusted: one line for the user."""


def files_under(directory):
    return sorted(p for p in Path(directory).rglob("*") if p.is_file())


# --- weights ----------------------------------------------------------------------------------------------------

def to_float16(src, dst):
    """src's float32 tensors as float16 in dst (safetensors); other dtypes unchanged. A float32 tensor whose values
    do not fit float16 (|x| > 65504) stays float32. Returns what was done, for the manifest."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    tensors, converted, kept = {}, [], []
    with safe_open(str(src), framework="pt") as f:
        metadata = f.metadata() or {}
        for name in f.keys():
            t = f.get_tensor(name)
            if t.dtype == torch.float32:
                if t.numel() and not (torch.isfinite(t).all() and t.abs().max() <= FP16_MAX):
                    kept.append(name)  # float16 would make it inf: left as it is
                else:
                    t = t.to(torch.float16)
                    converted.append(name)
            tensors[name] = t.contiguous()
    meta = {"gpu_pack": json.dumps({"float32_tensors": converted, "source_sha256": sha256(src),
                                    "source_metadata": metadata}), **{k: v for k, v in metadata.items()
                                                                       if k != "gpu_pack"}}
    save_file(tensors, str(dst), metadata=meta)
    return {"file": PACKED_WEIGHTS, "dtype": "float16", "tensors": len(tensors), "converted_to_float16": len(converted),
            "kept_float32": kept, "source_bytes": Path(src).stat().st_size, "source_sha256": sha256(src)}


def to_float32(src, dst):
    """The inverse of to_float16: the tensors that were float32 back in float32, in dst (safetensors)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        metadata = f.metadata() or {}
        if "gpu_pack" not in metadata:
            raise PackError(f"{src}: not written by gpu_pack.py (no 'gpu_pack' metadata)")
        info = json.loads(metadata["gpu_pack"])
        was_float32 = set(info["float32_tensors"])
        tensors = {name: f.get_tensor(name).to(torch.float32) if name in was_float32 else f.get_tensor(name)
                   for name in f.keys()}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(dst), metadata=info.get("source_metadata") or None)
    return info


# --- data -------------------------------------------------------------------------------------------------------

def conll_units(text):
    """A CoNLL file as units that keep its structure: whole documents when it has -DOCSTART- lines, else
    sentences (blank-line separated), each with its trailing blank line(s)."""
    lines = text.splitlines(keepends=True)
    if any(line.startswith("-DOCSTART-") for line in lines):
        units, current = [], []
        for line in lines:
            if line.startswith("-DOCSTART-") and current:
                units.append("".join(current))
                current = []
            current.append(line)
        if current:
            units.append("".join(current))
        return units
    units, current = [], []
    for line in lines:
        current.append(line)
        if not line.strip() and any(l.strip() for l in current):
            units.append("".join(current))
            current = []
    if current:
        units.append("".join(current))
    return units


def csv_units(text):
    """A CSV file as its records, byte for byte: a record ends at a newline outside quotes."""
    units, start, quotes = [], 0, 0
    for i, ch in enumerate(text):
        if ch == '"':
            quotes += 1
        elif ch == "\n" and quotes % 2 == 0:
            units.append(text[start:i + 1])
            start, quotes = i + 1, 0
    if start < len(text):
        units.append(text[start:])
    return units


def sample(n, keep, seed):
    """`keep` of range(n), chosen with a seeded generator and returned in their original order."""
    return sorted(random.Random(seed).sample(range(n), keep)) if keep < n else list(range(n))


def copy_data(name, src, dst, fraction, seed=0):
    """One data set from src into dst; its training split reduced to `fraction` of its units (1.0: copied as
    it is). Returns the manifest entry: what was taken of each split."""
    fmt, parts = DATASETS[name]
    dst.mkdir(parents=True, exist_ok=True)
    entry = {"format": fmt, "source": str(src), "subsampled": fraction < 1.0, "seed": seed, "splits": {}}
    for part in parts:
        split = part.split(".")[0]
        if fmt == "snips":
            texts = {f: (src / part / f).read_text(encoding="utf-8") for f in SNIPS_FILES}
            rows = {f: t.splitlines(keepends=True) for f, t in texts.items()}
            n = len(rows["seq.in"])
            if any(len(r) != n for r in rows.values()):
                raise PackError(f"{src / part}: seq.in, seq.out and label have different line counts")
            keep = sample(n, max(1, int(n * fraction)), seed) if split == "train" and fraction < 1 else range(n)
            (dst / part).mkdir(exist_ok=True)
            for f in SNIPS_FILES:
                if len(keep) == n:
                    shutil.copyfile(src / part / f, dst / part / f)
                else:
                    (dst / part / f).write_text("".join(rows[f][i] for i in keep), encoding="utf-8")
            entry["splits"][split] = {"unit": "sentence", "taken": len(keep), "of": n}
        elif part == "classes.txt":
            shutil.copyfile(src / part, dst / part)
        else:
            text = (src / part).read_text(encoding="utf-8")
            units = conll_units(text) if fmt == "conll" else csv_units(text)
            keep = sample(len(units), max(1, int(len(units) * fraction)), seed) \
                if split == "train" and fraction < 1 else range(len(units))
            if len(keep) == len(units):
                shutil.copyfile(src / part, dst / part)
            else:
                (dst / part).write_text("".join(units[i] for i in keep), encoding="utf-8")
            unit = "row" if fmt == "csv" else "document" if units and units[0].startswith("-DOCSTART-") else "sentence"
            entry["splits"][split] = {"unit": unit, "taken": len(keep), "of": len(units)}
        if split in entry["splits"]:
            entry["splits"][split]["source_sha256"] = sha256(src / part / "seq.in") if fmt == "snips" \
                else sha256(src / part)
    return entry


def data_bytes(src, name, train_only=False):
    fmt, parts = DATASETS[name]
    paths = []
    for part in parts:
        if train_only and not part.startswith("train"):
            continue
        paths += [src / part / f for f in SNIPS_FILES] if fmt == "snips" else [src / part]
    return sum(p.stat().st_size for p in paths)


def check_data_source(src, name):
    fmt, parts = DATASETS[name]
    missing = [str(src / part / f) for part in parts for f in SNIPS_FILES if not (src / part / f).is_file()] \
        if fmt == "snips" else [str(src / part) for part in parts if not (src / part).is_file()]
    if missing:
        raise PackError(f"{name}: missing {', '.join(missing)}")


# --- pack, verify, restore --------------------------------------------------------------------------------------

def pack(out=DEFAULT_PACK, weights=DEFAULT_WEIGHTS, data_root=DEFAULT_DATA, datasets=tuple(DATASETS),
         budget_mib=60.0, overwrite=False, seed=0, log=print):
    """Write the pack into `out` (new, empty, or an earlier pack with overwrite) and return its manifest."""
    out, weights = Path(out), Path(weights)
    budget = int(budget_mib * MiB)
    if not (weights / WEIGHTS_FILE).is_file() or not (weights / "config.json").is_file():
        raise PackError(f"{weights}: no {WEIGHTS_FILE} and config.json (fetch the default weights first: "
                        "python -m minimtl.machinery.download)")
    sources = {name: Path(data_root) / name for name in datasets}
    for name, src in sources.items():
        check_data_source(src, name)
    earlier_pack = overwrite and (out / "manifest.json").is_file()
    if out.exists() and (not out.is_dir() or any(out.iterdir()) and not earlier_pack):
        raise PackError(f"{out} exists and is not an empty folder (an earlier pack is replaced with --overwrite)")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        wdst = tmp / "weights" / weights.name
        wdst.mkdir(parents=True)
        log(f"weights: {weights / WEIGHTS_FILE} ({(weights / WEIGHTS_FILE).stat().st_size / MiB:.1f} MiB) -> float16")
        weights_entry = to_float16(weights / WEIGHTS_FILE, wdst / PACKED_WEIGHTS)
        copied = []
        for name in CHECKPOINT_FILES:
            if (weights / name).is_file():
                (wdst / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(weights / name, wdst / name)
                copied.append(name)
        weights_entry.update(name=weights.name, source=str(weights), copied=copied)
        fixed = sum(p.stat().st_size for p in files_under(tmp)) + 64 * 1024  # + the manifest, generously
        whole = {name: data_bytes(src, name) for name, src in sources.items()}
        fraction = 1.0
        if fixed + sum(whole.values()) > budget:
            train = sum(data_bytes(src, name, train_only=True) for name, src in sources.items())
            room = budget - fixed - (sum(whole.values()) - train)
            fraction = room / train * 0.97 if train else 0.0  # a little under: units vary in size
            if fraction < 0.05:
                raise PackError(f"the pack would take {(fixed + sum(whole.values())) / MiB:.1f} MiB, over the budget "
                                f"of {budget_mib} MiB, and subsampling the training splits cannot make it fit "
                                f"(the weights alone take {fixed / MiB:.1f} MiB)")
            log(f"data: {sum(whole.values()) / MiB:.1f} MiB do not fit; training splits subsampled to "
                f"{fraction:.1%} (seed {seed})")
        data_entry = {}
        for name, src in sources.items():
            data_entry[name] = copy_data(name, src, tmp / "data" / name, fraction, seed)
            log(f"data: {name}: " + ", ".join(f"{s} {v['taken']}/{v['of']} {v['unit']}s"
                                              for s, v in data_entry[name]["splits"].items()))
        files = {p.relative_to(tmp).as_posix(): {"sha256": sha256(p), "bytes": p.stat().st_size}
                 for p in files_under(tmp)}
        total = sum(f["bytes"] for f in files.values())
        manifest = {"format": "minimtl-gpu-pack/1", "weights": weights_entry, "weights_dir": f"weights/{weights.name}",
                    "data": data_entry, "files": files, "total_bytes": total, "total_mib": round(total / MiB, 2),
                    "budget_bytes": budget}
        manifest_text = json.dumps(manifest, indent=2) + "\n"
        (tmp / "manifest.json").write_text(manifest_text, encoding="utf-8")
        size = total + len(manifest_text.encode())
        if size > budget:
            raise PackError(f"the pack takes {size / MiB:.1f} MiB, over the budget of {budget_mib} MiB")
        if out.exists():  # an empty folder, or the earlier pack (--overwrite): replaced only now
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {out}: {len(files) + 1} files, {size / MiB:.2f} MiB (budget {budget_mib} MiB)")
    return manifest


def read_manifest(pack_dir):
    path = Path(pack_dir) / "manifest.json"
    if not path.is_file():
        raise PackError(f"{pack_dir}: no manifest.json (make the pack with python scripts/gpu_pack.py)")
    return json.loads(path.read_text(encoding="utf-8"))


def verify(pack_dir=DEFAULT_PACK):
    """Every file the manifest names, checked by size and sha256; returns the manifest."""
    manifest = read_manifest(pack_dir)
    bad = []
    for rel, info in manifest["files"].items():
        p = Path(pack_dir) / rel
        if not p.is_file():
            bad.append(f"{rel} missing")
        elif p.stat().st_size != info["bytes"] or sha256(p) != info["sha256"]:
            bad.append(f"{rel} differs")
    if bad:
        raise PackError(f"{pack_dir}: {len(bad)} file(s) do not match manifest.json: {'; '.join(bad[:5])}")
    return manifest


def restore(pack_dir=DEFAULT_PACK, dest=None, overwrite=False):
    """The pack's weights as a float32 checkpoint directory `dest` (usable as --weights): model.safetensors
    restored from float16, the other files copied. Returns {"dest", "tensors", "bytes", "sha256"}."""
    pack_dir = Path(pack_dir)
    manifest = verify(pack_dir)
    src = pack_dir / manifest["weights_dir"]
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) and not overwrite:
        raise PackError(f"{dest} exists and is not an empty folder (give --overwrite to replace it)")
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        info = to_float32(src / PACKED_WEIGHTS, tmp / WEIGHTS_FILE)
        for p in files_under(src):
            rel = p.relative_to(src)
            if rel.as_posix() != PACKED_WEIGHTS:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, tmp / rel)
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif dest.exists() or dest.is_symlink():
            dest.unlink()
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    weights = dest / WEIGHTS_FILE
    return {"dest": str(dest), "float32_tensors": len(info["float32_tensors"]), "bytes": weights.stat().st_size,
            "sha256": sha256(weights), "source_sha256": info["source_sha256"],
            "bit_identical_to_source": sha256(weights) == info["source_sha256"]}


# --- the restored copy as minimtl's default weights (GPU machine only) ------------------------------------------

RESTORED_DEFAULT_ENV = "MINIMTL_GPU_RESTORED_DEFAULT"


def accept_restored_default():
    """Where $MINIMTL_GPU_RESTORED_DEFAULT names a restored copy of the default weights (which
    gpu_check.sh puts at weights/all-MiniLM-L6-v2 on a machine without them, and no network to fetch them),
    let minimtl's sha256 check of the default model.safetensors accept that copy's float16-rounded bytes, so
    the test fixtures and benchmarks that ask for the default weights find them instead of downloading.
    Returns the module patched, or None (nothing set, or no such table found: then they try to download)."""
    target = os.environ.get(RESTORED_DEFAULT_ENV)
    if not target or not (Path(target) / WEIGHTS_FILE).is_file():
        return None
    import importlib
    digest = sha256(Path(target) / WEIGHTS_FILE)
    for name in ("minimtl.machinery.download", "minimtl.download", "minimtl.machinery.weights_download"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        table = getattr(module, "DEFAULT_FILES", None)
        if isinstance(table, dict) and WEIGHTS_FILE in table:
            table[WEIGHTS_FILE] = digest  # the dict is read at each call: every importer sees it
            return module
    print(f"gpu_pack: no DEFAULT_FILES table found in minimtl; {RESTORED_DEFAULT_ENV} has no effect",
          file=sys.stderr)
    return None


def pytest_configure(config):  # `python -m pytest -p gpu_pack` (scripts/ on PYTHONPATH)
    accept_restored_default()


def exec_script(script, args):
    """Run `script` as __main__ with `args`, after accept_restored_default()."""
    import runpy
    accept_restored_default()
    script = Path(script).resolve()
    sys.argv = [str(script), *args]
    sys.path.insert(0, str(script.parent))
    runpy.run_path(str(script), run_name="__main__")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pack", default=str(DEFAULT_PACK), help="the pack folder (default: gpu_pack/ at the repo root)")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="checkpoint to pack (default: %(default)s)")
    p.add_argument("--data-root", default=str(DEFAULT_DATA), help="folder holding the data sets (default: %(default)s)")
    p.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=list(DATASETS),
                   help="data sets to pack (default: all three; none: --datasets with no name)")
    p.add_argument("--budget-mib", type=float, default=60.0, help="fail when the pack is larger (default: 60)")
    p.add_argument("--seed", type=int, default=0, help="seed of any subsampling (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier pack / restored folder")
    p.add_argument("--restore", metavar="DIR",
                   help="write the pack's weights as float32 into DIR (usable as --weights)")
    p.add_argument("--verify", action="store_true", help="check every file of the pack against manifest.json")
    p.add_argument("--exec", dest="exec_", nargs=argparse.REMAINDER, metavar="SCRIPT ARGS",
                   help=f"run SCRIPT with ARGS, the default weights check accepting ${RESTORED_DEFAULT_ENV}")
    args = p.parse_args(argv)
    if args.exec_:
        exec_script(args.exec_[0], args.exec_[1:])
        return
    try:
        if args.restore:
            result = restore(args.pack, args.restore, args.overwrite)
            print(json.dumps(result))
        elif args.verify:
            manifest = verify(args.pack)
            print(f"{args.pack}: {len(manifest['files'])} files match manifest.json ({manifest['total_mib']} MiB)")
        else:
            pack(args.pack, args.weights, args.data_root, tuple(args.datasets), args.budget_mib, args.overwrite,
                 args.seed)
    except PackError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
