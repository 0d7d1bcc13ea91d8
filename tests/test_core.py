"""The core alone is the lesson: it trains the demo with linear heads, and no extension is ever imported for it.

The script below is the whole path a reader follows, run in a fresh interpreter so that `sys.modules` shows
exactly what it imported: the pretrained encoder, the tokenizer and its first-sub-token labels, the two heads
on one backbone, batches, freezing and the loop (`training.fit`), evaluation, inference to spans. Only the
demo's files are read with the run's reader (machinery/data.py), which imports no extension either.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys

from tokenizers import Tokenizer

from minimtl.batching import encode_split
from minimtl.config import TrainConfig
from minimtl.evaluation import evaluate
from minimtl.inference import predict
from minimtl.machinery.data import LabelVocab, load_data
from minimtl.model import ClassificationHead, MultiTaskModel, TokenHead
from minimtl.tokenization import WordTokenizer
from minimtl.training import fit, seed_everything
from minimtl.weights import load_encoder


class Demo:  # what evaluation reads of a data source
    name = "demo"
    splits = load_data("minimtl/demo")
    labels = LabelVocab.from_values(ex.label for ex in splits.train)
    tags = LabelVocab.from_values(t for ex in splits.train for t in ex.tags)


cfg = TrainConfig(freeze=["backbone"], epochs=3, pooling="mean")
seed_everything(cfg.seed)
encoder = load_encoder(sys.argv[1])
tokenizer = WordTokenizer(Tokenizer.from_file(f"{sys.argv[1]}/tokenizer.json"))
H = encoder.config.hidden_size
model = MultiTaskModel(encoder, ClassificationHead(H, len(Demo.labels), cfg.pooling), TokenHead(H, Demo.tags.names))
Demo.ids = {split: encode_split(tokenizer, getattr(Demo.splits, split), Demo.labels, Demo.tags, cfg.max_len)
            for split in ("train", "dev", "test")}
best_epoch, dev = fit(model, Demo, cfg, log=lambda line: print(line, file=sys.stderr))
test = evaluate(model, Demo, "test")
prediction = predict(model, tokenizer, ["Alice flew to Paris with Google engineers."], Demo.labels.names,
                     Demo.tags.names)[0]
print(json.dumps({"best_epoch": best_epoch, "dev": dev, "test": test, "prediction": prediction.to_json(),
                  "classes": len(Demo.labels), "extensions": sorted(m for m in sys.modules
                                                                    if m.startswith("minimtl.extensions"))}))
"""


def test_the_core_alone_trains_the_demo_and_imports_no_extension(checkpoint_dir):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(checkpoint_dir)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads(done.stdout)
    assert run["extensions"] == []
    assert 1 <= run["best_epoch"] <= 3
    # Six balanced topics (chance: 17%) and BIO tags on a frozen encoder with linear heads: far above chance.
    assert run["dev"]["label_accuracy"] > 0.8 and run["test"]["label_accuracy"] > 0.8
    assert run["dev"]["entity_f1"] > 0.4 and run["test"]["entity_f1"] > 0.4
    prediction = run["prediction"]
    assert prediction["label"] and len(prediction["tags"]) == len(prediction["words"])
    assert all(prediction["text"][e["start"]:e["end"]] == e["text"] for e in prediction["entities"])
