"""The two commands a new user runs: train.py, then infer.py in a fresh process, default weights."""

import json
import subprocess
import sys

from conftest import ROOT
from minimtl.machinery.checkpoint import load_predictor

TEXTS = ["President Biden visited Wall Street on Monday.", "Tesla's CEO Elon Musk unveiled the Cybertruck.",
         "Fetch Rewards is awesome and is America's number one app."]


def cli(*args, stdin=None):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, input=stdin,
                          timeout=300)


def test_train_then_infer_in_a_fresh_process(tiny_data, checkpoint_dir, tmp_path):
    out = tmp_path / "run"
    trained = cli("train.py", "--data", str(tiny_data), "--weights", str(checkpoint_dir), "--out", str(out),
                  "--epochs", "2", "--batch-size", "16")
    assert trained.returncode == 0, trained.stderr
    lines = trained.stdout.splitlines()
    assert "test (best epoch" in trained.stdout and "group" in lines[2]  # after where it writes, and the data
    assert lines[0].startswith("run in ") and lines[1].startswith("data: ")
    inferred = cli("infer.py", "--checkpoint", str(out), "--json", *TEXTS)
    assert inferred.returncode == 0, inferred.stderr
    lines = [json.loads(line) for line in inferred.stdout.splitlines()]
    assert len(lines) == len(TEXTS)
    for line, text in zip(lines, TEXTS):
        assert {"text", "label", "label_probability", "labels", "entities", "words", "tags"} <= set(line)
        assert line["text"] == text and len(line["tags"]) == len(line["words"])
        for entity in line["entities"]:
            assert text[entity["start"] : entity["end"]] == entity["text"]
    in_process = [p.to_json() for p in load_predictor(out).predictions(TEXTS)]
    assert lines == in_process
    human = cli("infer.py", "--checkpoint", str(out), TEXTS[0])
    assert human.returncode == 0 and "category:" in human.stdout
