"""`infer.py --evaluate DATA`: a saved checkpoint scored on a data file reproduces what training reported.

Two tiny 1-epoch runs: one on a joint JSONL folder, one on two sources at once (a CoNLL folder for NER and a
CSV folder for topics, as test_sources builds them). On each run's own test split, --evaluate must give the
test scores of its results.json to the last digit, whatever the format and whether it is given the folder or
the test file. The per-type numbers are checked against seqeval's classification_report (a test-only oracle).
"""

import csv
import json
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ET

import pytest
from conftest import ROOT
from seqeval.metrics import classification_report
from test_sources import jsonl_rows, write_conll, write_csv

from minimtl import UserError
from minimtl.machinery.settings import RunConfig
from minimtl.evaluation import predict
from minimtl.machinery.assemble import word_shapes_of
from minimtl.machinery.checkpoint import load_checkpoint
from minimtl.machinery.report import entity_table, evaluate_file, format_report
from minimtl.machinery.sources import encode_sources, load_sources, vocabularies
from minimtl.machinery.run import train
from minimtl.extensions.family_tokenizers import load_tokenizer


def run_training(data, tiny_weights, out):
    """(results, log lines) of a 1-epoch run; matplotlib cannot be imported while it runs."""
    lines = []
    blocked = sys.modules.get("matplotlib", "absent")
    sys.modules["matplotlib"] = None  # `import matplotlib` now raises ImportError
    try:
        cfg = RunConfig(data=[str(d) for d in data], weights=str(tiny_weights), out=str(out), epochs=1,
                          batch_size=8, lr_backbone=1e-3, lr_heads=1e-2)
        results = train(cfg, log=lines.append)
    finally:
        if blocked == "absent":
            del sys.modules["matplotlib"]
        else:
            sys.modules["matplotlib"] = blocked
    assert json.loads((out / "results.json").read_text()) == results
    return results, lines


@pytest.fixture(scope="module")
def joint(tmp_path_factory, tiny_data, tiny_weights):
    out = tmp_path_factory.mktemp("joint") / "run"
    return (out, *run_training([tiny_data], tiny_weights, out))


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory, tiny_data, tiny_weights):
    root = tmp_path_factory.mktemp("two")
    ner, topics = write_conll(root / "ner", tiny_data), write_csv(root / "topics", tiny_data)
    results, lines = run_training([ner, topics], tiny_weights, root / "run")
    return root / "run", ner, topics, results, lines


def infer(*args):
    return subprocess.run([sys.executable, "infer.py", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def source_scores(results, name):
    """The scores of one source of a multi-source run, without its "name/" prefix."""
    return {k[len(name) + 1:]: v for k, v in results.items() if k.startswith(name + "/")}


def test_joint_jsonl_folder_and_file_reproduce_results_json(joint, tiny_data):
    out, results, _ = joint
    assert {"label_accuracy", "entity_f1", "frame_accuracy"} <= set(results["test"])
    assert evaluate_file(out, tiny_data).scores == results["test"]
    assert evaluate_file(out, tiny_data / "test.jsonl").scores == results["test"]
    assert evaluate_file(out, tiny_data, "dev").scores == results["dev"]  # one epoch: the dev scores it saved


def test_each_source_of_a_two_source_run_reproduces_its_own_scores(two_sources):
    out, ner, topics, results, _ = two_sources
    assert evaluate_file(out, ner).scores == source_scores(results["test"], "ner")
    assert evaluate_file(out, ner / "test.txt").scores == source_scores(results["test"], "ner")
    assert evaluate_file(out, topics).scores == source_scores(results["test"], "topics")
    assert evaluate_file(out, topics / "test.csv").scores == source_scores(results["test"], "topics")


def test_cli_json_is_results_json(joint, tiny_data):
    out, results, lines = joint
    done = infer("--checkpoint", out, "--evaluate", tiny_data, "--json")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    report = json.loads(done.stdout)
    assert report["scores"] == results["test"]  # floats through JSON and back: the same doubles
    assert report["calibration"]["ece"] == results["calibration"]["test"]
    assert report["sentences"] == 16
    assert report["notes"] == [line.split(": test: ")[1] for line in lines if ": test: " in line]  # as training
    wrong = sum(c["count"] for c in report["confusions"])
    assert wrong <= round((1 - results["test"]["label_accuracy"]) * 16)
    text = infer("--checkpoint", out, "--evaluate", tiny_data)
    assert text.returncode == 0 and text.stdout == format_report(evaluate_file(out, tiny_data)) + "\n"
    assert f"sentence accuracy {100 * results['test']['label_accuracy']:.2f}" in text.stdout


def gold_and_predicted_tags(out, data):
    """The test split's gold tags and the saved model's predictions, built exactly as training builds them."""
    model, meta = load_checkpoint(out)
    sources = load_sources([data])
    aligner = load_tokenizer(out, model.bert.config.vocab_size)
    cfg = RunConfig(data=[str(data)])
    encode_sources(sources, aligner, vocabularies(sources), cfg, meta["max_len"], model.bert.config.max_tokens,
                   lambda _: None, word_shapes=word_shapes_of(model) is not None)
    _, predicted = predict(model, sources[0], "test")
    return [list(ex.tags) for ex in sources[0].splits.test], predicted


def test_per_type_scores_equal_seqeval(joint, tiny_data):
    out, results, lines = joint
    gold, predicted = gold_and_predicted_tags(out, tiny_data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns on 0/0 and returns 0.0, as we do
        report = classification_report(gold, predicted, output_dict=True)
    test = results["test"]
    types = [kind for kind in report if not kind.endswith(" avg")]
    assert types and sorted(types) == sorted(k.split("/", 1)[1] for k in test if k.startswith("entity_support/"))
    rows = {kind: report[kind] for kind in types} | {"": report["micro avg"]}
    for kind, row in rows.items():
        suffix = f"/{kind}" if kind else ""
        assert test["entity_support" + suffix] == row["support"]
        for ours, theirs in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert test[f"entity_{ours}{suffix}"] == pytest.approx(row[theirs], abs=1e-12)
    # The same table at the end of training and from --evaluate, each row seqeval's numbers to 2 decimals.
    table = entity_table(test)
    assert table in "\n".join(lines) and table in format_report(evaluate_file(out, tiny_data))
    for kind, row in rows.items():
        shown = [f"{100 * row[k]:.2f}" for k in ("precision", "recall", "f1-score")] + [str(row["support"])]
        assert f"{kind or 'micro avg'} {'  '.join(shown)}".split() in [line.split() for line in table.splitlines()]


def test_two_source_run_logs_one_table_per_tagged_source(two_sources):
    _, _, _, results, lines = two_sources
    log = "\n".join(lines)
    assert "test entities by type:\nner:\n" + entity_table(results["test"], "ner/") in log
    assert "topics:" not in log.split("test entities by type:")[1]  # no tags, no table


def test_curves_are_drawn_without_matplotlib(joint):
    out, _, _ = joint
    root = ET.parse(out / "curves.svg").getroot()  # raises if malformed
    svg = "{http://www.w3.org/2000/svg}"
    assert root.tag == svg + "svg"
    panels = {g.get("id"): g for g in root.iter(svg + "g") if g.get("class") == "panel"}
    assert set(panels) == {"loss", "dev"}
    names = {p: [line.find(svg + "title").text for line in g.iter(svg + "polyline")] for p, g in panels.items()}
    # the loss panel draws the per-step training loss beside each task's per-epoch dev loss
    assert names == {"loss": ["all tasks, per step (mean of the last 50)", "cls", "ner"],
                     "dev": ["entity_f1", "frame_accuracy", "label_accuracy"]}
    assert [t.text for t in panels["dev"].iter(svg + "text") if t.get("class") == "selected"] == ["selected: epoch 1"]


ECE_KEYS = {"label_ece_before", "label_ece_after", "entity_ece_before", "entity_ece_after"}


def test_training_calibrates_the_checkpoint_and_reports_ece(joint, tiny_data):
    out, results, lines = joint
    calibration = results["calibration"]
    temperatures = calibration["temperature"]
    assert set(temperatures) == {"cls", "ner"} and all(t > 0 for t in temperatures.values())
    assert json.loads((out / "config.json").read_text())["minimtl"]["temperature"] == temperatures
    assert set(calibration["test"]) == ECE_KEYS and all(0 <= v <= 1 for v in calibration["test"].values())
    assert any(line.startswith("calibration: cls T = ") for line in lines)
    # --evaluate on the run's test split: the same ECE, before and after, to the last digit.
    report = evaluate_file(out, tiny_data)
    assert report.calibration == {"temperature": temperatures, "ece": calibration["test"]}
    text = format_report(report)
    assert "calibration: expected calibration error (15 bins)" in text
    assert f"sentence labels  {100 * calibration['test']['label_ece_before']:>6.2f}% -> " in text
    assert f"(T = {temperatures['ner']:.3f})" in text


def test_reliability_diagram_has_a_panel_per_task(joint):
    out, results, _ = joint
    root = ET.parse(out / "reliability.svg").getroot()  # raises if malformed
    svg = "{http://www.w3.org/2000/svg}"
    panels = [g for g in root.iter(svg + "g") if g.get("class") == "panel"]
    assert len(panels) == 2
    titles = [t.text for t in root.iter(svg + "text") if t.get("font-weight") == "bold"]
    assert titles[0].startswith("sentence labels (16)") and titles[1].startswith("entities (")
    ece = 100 * results["calibration"]["test"]["entity_ece_after"]
    lines = [line.find(svg + "title").text for line in panels[1].iter(svg + "polyline")]
    assert lines[0].startswith("before (T = 1): ECE ") and lines[1].endswith(f": ECE {ece:.2f}%")


def test_two_source_run_reports_ece_per_source(two_sources):
    out, _, _, results, _ = two_sources
    assert set(results["calibration"]["test"]) == {"ner/entity_ece_before", "ner/entity_ece_after",
                                                   "topics/label_ece_before", "topics/label_ece_after"}
    assert set(results["calibration"]["temperature"]) == {"cls", "ner"}


def test_unseen_labels_and_tags_are_noted_once_and_counted_wrong(joint, tiny_data, tmp_path):
    out, results, _ = joint
    rows = [json.loads(line) for line in (tiny_data / "test.jsonl").read_text().splitlines()]
    for row in rows[:3]:
        row["label"] = "aliens"
    renamed = 0
    for row in rows:
        for i, tag in enumerate(row["tags"]):
            if tag.endswith("-PER"):
                row["tags"][i], renamed = tag[:2] + "MARTIAN", renamed + tag.startswith("B-")
    assert renamed
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = evaluate_file(out, path)
    labels_note, tags_note = report.notes[:2]
    assert labels_note == "3 sentences have labels not seen in train (aliens x3): counted as wrong"
    assert "tags not seen in train (" in tags_note and "B-MARTIAN" in tags_note
    assert tags_note.endswith("counted as wrong") and len(report.notes) == 2
    scores = report.scores
    assert scores["entity_support/MARTIAN"] == renamed and scores["entity_recall/MARTIAN"] == 0.0
    assert "entity_f1/PER" not in scores or scores["entity_support/PER"] == 0
    assert scores["entity_support"] == results["test"]["entity_support"]  # the same chunks, one type renamed
    for row in rows:
        row["label"] = "aliens"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = evaluate_file(out, path)
    assert report.notes[0] == "16 sentences have labels not seen in train (aliens x16): counted as wrong"
    assert report.scores["label_accuracy"] == 0.0 and report.scores["frame_accuracy"] == 0.0
    assert {gold for gold, _, _ in report.confusions} == {"aliens"}


# --- errors: one line, exit 2 ------------------------------------------------------------------------------

def error_cases(d, tiny_data):
    (d / "texts.txt").write_text("Alice went to Paris last summer.\n")  # raw text: no tags to read
    (d / "texts.jsonl").write_text('{"text": "Alice went to Paris"}\n')  # JSON lines without labels
    (d / "data.json").write_text("[]")
    (d / "no_test").mkdir()
    (d / "no_test" / "train.jsonl").write_text((tiny_data / "train.jsonl").read_text())
    return {
        "raw text": ([d / "texts.txt"], "texts.txt:1: tag 'summer.' is not O, B-TYPE or I-TYPE"),
        "no labels": ([d / "texts.jsonl"], "texts.jsonl:1: a JSON line needs 'tags', 'label' or both"),
        "unknown format": ([d / "data.json"], "data.json: unknown data format"),
        "no test split": ([d / "no_test"], "no_test: no test split"),
        "missing": ([d / "missing"], "missing: no such file or directory"),
        "split of a file": ([tiny_data / "test.jsonl", "--split", "dev"], "this is one split, read whole"),
        "no checkpoint": ([tiny_data, "--checkpoint", d / "missing_ckpt"], "no checkpoint here"),
    }


def test_errors_are_one_line(joint, tiny_data, tmp_path):
    out, _, _ = joint
    cases = error_cases(tmp_path, tiny_data)
    started = {name: subprocess.Popen([sys.executable, "infer.py", "--checkpoint", str(out), "--evaluate",
                                       *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for name, (args, _) in cases.items()}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 2 and stdout == "", (name, stderr)
        assert len(stderr.splitlines()) == 1 and stderr.startswith("error: "), (name, stderr)
        assert cases[name][1] in stderr, (name, stderr)


def test_only_the_tasks_both_data_and_checkpoint_have_are_scored(two_sources, joint, tmp_path, tiny_data,
                                                                  tiny_weights):
    _, ner, topics, _, _ = two_sources
    report = evaluate_file(joint[0], ner)  # a joint model on NER-only data: tags scored, quietly
    assert {"entity_f1", "token_accuracy"} <= set(report.scores) and "label_accuracy" not in report.scores
    assert report.notes == [] and report.confusions == []
    ner_out = tmp_path / "ner_run"
    train(RunConfig(data=[str(ner)], weights=str(tiny_weights), out=str(ner_out), epochs=1, batch_size=8),
          log=lambda _: None)
    report = evaluate_file(ner_out, tiny_data)  # joint data on an NER-only model: the labels cannot be scored
    assert report.notes[0] == "the data's sentence labels are not scored: the checkpoint has no sentence head"
    assert "label_accuracy" not in report.scores and "frame_accuracy" not in report.scores
    with pytest.raises(UserError, match="nothing to score: .* has sentence labels, but the checkpoint predicts "
                                        "entity tags"):
        evaluate_file(ner_out, topics)


def test_flags_that_do_not_go_together():
    for args, message in ((["--evaluate", "x", "Paris"], "give no texts"), (["--split", "dev", "Paris"], "--split"),
                          (["--json", "--html", "p.html", "Paris"], "not both")):
        done = infer(*args)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_a_dev_split_too_small_to_fit_on_keeps_t_1_and_says_why(joint):
    # Issue 38: a temperature fitted on a 20-sentence dev set made test confidences worse. The tiny run's dev
    # has 16 sentences, so neither head is fitted.
    out, results, lines = joint
    assert results["calibration"]["temperature"] == {"cls": 1.0, "ner": 1.0}
    assert "calibration: cls T = 1, not fitted: dev has 16 labelled sentences, and a temperature fitted on fewer " \
           "than 100 follows their accidents" in lines
    summary = next(line for line in lines if line.startswith("calibration: cls T = 1.000"))
    ece = results["calibration"]["test"]
    assert f"label ECE {100 * ece['label_ece_before']:.2f}% -> {100 * ece['label_ece_after']:.2f}%" in summary
    assert summary.endswith("(test ECE, before -> after)")


def test_evaluate_reads_a_csv_by_the_columns_named_as_train_py_does(joint, tiny_data, tmp_path):
    out, results, _ = joint
    path = tmp_path / "intents.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "Intent", "utterance"])
        writer.writerows([i, r["label"], " ".join(r["tokens"])] for i, r in enumerate(jsonl_rows(tiny_data, "test")))
    done = infer("--checkpoint", out, "--evaluate", path, "--text-column", "utterance", "--label-column", "intent",
                 "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["scores"]["label_accuracy"] == results["test"]["label_accuracy"]
    refused = infer("--checkpoint", out, "--evaluate", path)
    assert refused.returncode == 2 and refused.stderr == (
        f"error: {path}:1: the header is 'id,Intent,utterance': name the columns text,label, or select them with "
        "--text-column NAME --label-column NAME\n")
    nothing = infer("--checkpoint", out, "--evaluate", tiny_data / "test.jsonl", "--text-column", "utterance")
    assert nothing.returncode == 2 and nothing.stderr == (
        f"error: {tiny_data / 'test.jsonl'}: --text-column selects a column of a CSV file's header: this is JSON "
        "lines\n")
