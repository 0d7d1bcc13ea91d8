"""Shared helpers for the benchmark scripts: SNIPS ids, alternating timing, machine speed, JSON results.

Not a test module: tests/benchmarks/conftest.py keeps pytest away from everything in this folder.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from minimtl.extensions.precision import native_bf16_cpu  # noqa: E402
from minimtl.tokenization import WordTokenizer  # noqa: E402
from minimtl.batching import encode_split  # noqa: E402
from minimtl.machinery.data import LabelVocab, load_data  # noqa: E402
from minimtl.machinery.download import fetch_default_weights  # noqa: E402
from minimtl.extensions.family_tokenizers import load_tokenizer

SNIPS = ROOT.parent / "shared" / "data" / "snips"
RESULTS = Path(__file__).resolve().parent / "results"


def parser(description, timing=True):
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke mode: a few hundred sentences, seconds")
    if timing:
        p.add_argument("--repeats", type=int, default=None, help="timed runs per contender, median (5; 2 --quick)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--data", default=str(SNIPS), help="SNIPS folder (default: ../shared/data/snips)")
    return p


def setup(args):
    if getattr(args, "repeats", 0) is None:
        args.repeats = 2 if args.quick else 5
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)


def snips_dir(path=SNIPS):
    path = Path(path)
    if not (path / "train" / "seq.in").is_file():
        sys.exit(f"error: SNIPS not found at {path} (expected train/seq.in, seq.out, label; "
                 "the benchmarks read ../shared/data/snips relative to the repo root)")
    return path


def weights_dir():
    return fetch_default_weights(quiet=True)


def snips_ids(names, data=SNIPS, max_len=128, n=None):
    """SNIPS splits as ids, tokenized with our WordTokenizer: (aligner, {name: SplitIds}, label_vocab, tag_vocab).

    Each split is cut to its first `n` sentences when given; vocabularies come from the whole training split.
    """
    splits = load_data(snips_dir(data))
    labels = LabelVocab.from_values(ex.label for ex in splits.train)
    tags = LabelVocab.from_values(t for ex in splits.train for t in ex.tags)
    aligner = load_tokenizer(weights_dir())
    encoded = {name: encode_split(aligner, getattr(splits, name)[:n], labels, tags, max_len) for name in names}
    return aligner, encoded, labels, tags


def snips_train_ids(n, data=SNIPS, max_len=128):
    """The first `n` SNIPS training sentences as ids: (aligner, SplitIds, label_vocab, tag_vocab)."""
    aligner, encoded, labels, tags = snips_ids(["train"], data, max_len, n)
    return aligner, encoded["train"], labels, tags


def quiet_transformers():
    """transformers (the test-only oracle), without its progress bars and load report."""
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def file_order(n, batch_size):
    return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


def alternate(contenders, repeats):
    """Call each contender in turn, `repeats` rounds: {name: [values]}. Alternating spreads load spikes fairly."""
    values = {name: [] for name in contenders}
    for r in range(repeats):
        for name, fn in contenders.items():
            values[name].append(fn())
        print(f"  round {r + 1}/{repeats}: " + "  ".join(f"{k} {v[-1]:.3g}" for k, v in values.items()), flush=True)
    return values


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def matmul_gflops(n=1024, repeats=5, dtype=torch.float32):
    """The machine's matmul speed right now: median GFLOP/s of a few n x n matmuls (after one warm-up)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    seconds = [timed(lambda: a @ b) for _ in range(repeats)]
    return 2 * n**3 / statistics.median(seconds) / 1e9


def non_embedding_params(encoder):
    return sum(p.numel() for name, p in encoder.named_parameters() if not name.startswith("embeddings."))


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info():
    def git(*cmd):
        try:
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        except OSError:
            return None
    info = {"cpu": cpu_model(), "native_bf16": native_bf16_cpu(), "cpus": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "load_average": list(os.getloadavg()),
            "commit": git("rev-parse", "HEAD"), "minimtl_dirty": bool(git("status", "--porcelain", "--", "minimtl"))}
    if "transformers" in sys.modules:
        info["transformers"] = sys.modules["transformers"].__version__
    return info


def bf16_skip_reason():
    """Why bf16 rows are not timed on this CPU, or None when they are: without bf16 in hardware the products
    are emulated, and timing them would measure only the emulation."""
    if native_bf16_cpu():
        return None
    return (f"bf16 rows skipped: this CPU ({cpu_model()}) has no native bf16 dot products (AVX512-BF16 or AMX); "
            "timing them would measure only the emulation")


def write_results(name, results, args):
    """Print the path and write results + machine info to results/NAME.json (NAME.quick.json when --quick)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}{'.quick' if args.quick else ''}.json"
    record = {"benchmark": name, "args": vars(args), "machine": machine_info(), **results}
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def median(values):
    return statistics.median(values)


def padding_fraction(batch_list):
    """Share of the positions in these batches that are padding."""
    total = sum(b.attention_mask.numel() for b in batch_list)
    return 1 - sum(int(b.attention_mask.sum()) for b in batch_list) / max(total, 1)
