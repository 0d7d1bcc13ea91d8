"""The hand-written SVG curves: well-formed for every shape of history, one line per series, the selection shown."""

import math
import xml.etree.ElementTree as ET

from minimtl.machinery.plots import write_curves

SVG = "{http://www.w3.org/2000/svg}"


def record(epoch, losses=None, dev=None):
    losses = {"cls": 1 / epoch, "ner": 2 / epoch} if losses is None else losses
    dev = {"label_accuracy": 0.5, "entity_f1": 0.4} if dev is None else dev
    return {"epoch": epoch, "loss": sum(losses.values()), "losses": losses, "dev": dev}


def draw(tmp_path, history, best_epoch):
    path = tmp_path / "curves.svg"
    write_curves(path, history, best_epoch)
    root = ET.parse(path).getroot()  # raises on malformed XML
    assert root.tag == SVG + "svg"
    return path, {g.get("id"): g for g in root.iter(SVG + "g") if g.get("class") == "panel"}


def series(panel):
    """The name of each polyline in a panel (each carries its name as a <title>)."""
    return [line.find(SVG + "title").text for line in panel.iter(SVG + "polyline")]


def selected_labels(panel):
    return [t.text for t in panel.iter(SVG + "text") if t.get("class") == "selected"]


def test_one_epoch(tmp_path):
    _, panels = draw(tmp_path, [record(1)], 1)
    assert series(panels["loss"]) == ["cls", "ner"]
    assert series(panels["dev"]) == ["entity_f1", "label_accuracy"]
    assert selected_labels(panels["dev"]) == ["selected: epoch 1"]
    assert len(list(panels["loss"].iter(SVG + "circle"))) == 2 + 2  # one marker per point, one per legend row


def test_many_epochs_and_selection(tmp_path):
    history = [record(e, dev={"ag_news/label_accuracy": 0.5 + e / 200, "conll2003/entity_f1": 0.3 + e / 100,
                              "conll2003/entity_f1/PER": 0.9, "token_accuracy": 0.97, "frame_accuracy": 0.2,
                              "loss": 3.0})
               for e in range(1, 61)]
    _, panels = draw(tmp_path, history, 42)
    # Only the selectable scores are plotted: not per-type F1, token accuracy, or anything that is not a score.
    assert series(panels["dev"]) == ["ag_news/label_accuracy", "conll2003/entity_f1", "frame_accuracy"]
    assert selected_labels(panels["dev"]) == ["selected: epoch 42"]
    lines = [line for line in panels["dev"].iter(SVG + "line") if line.get("class") == "selected"]
    assert len(lines) == 1 and lines[0].get("stroke-dasharray")
    points = panels["dev"].find(f"{SVG}polyline").get("points").split()
    assert len(points) == 60
    xs = [float(p.split(",")[0]) for p in points]
    assert xs == sorted(xs) and float(lines[0].get("x1")) == xs[41]  # the line stands on epoch 42's points


def test_constant_values(tmp_path):
    history = [record(e, losses={"cls": 0.0}, dev={"label_accuracy": 1.0, "entity_f1": 0.0}) for e in (1, 2, 3)]
    path, panels = draw(tmp_path, history, 2)
    assert series(panels["loss"]) == ["cls"] and series(panels["dev"]) == ["entity_f1", "label_accuracy"]
    assert "nan" not in path.read_text().lower() and "inf" not in path.read_text().lower()


def test_missing_tasks_and_keys(tmp_path):
    history = [record(1, losses={"cls": 0.9}, dev={"label_accuracy": 0.6}),
               record(2, losses={"cls": 0.7, "ner": 1.5}, dev={"label_accuracy": 0.7, "entity_f1": 0.5}),
               {"epoch": 3, "losses": {"ner": 1.1, "crf": float("nan")}},  # no dev at all, a NaN loss
               record(4, losses={"cls": 0.4, "ner": 0.9}, dev={"entity_f1": None, "label_accuracy": 0.8})]
    _, panels = draw(tmp_path, history, 4)
    assert series(panels["loss"]) == ["cls", "ner"]
    counts = {line.find(SVG + "title").text: len(line.get("points").split())
              for line in panels["loss"].iter(SVG + "polyline")}
    assert counts == {"cls": 3, "ner": 3}
    counts = {line.find(SVG + "title").text: len(line.get("points").split())
              for line in panels["dev"].iter(SVG + "polyline")}
    assert counts == {"entity_f1": 1, "label_accuracy": 3}


def test_flat_loss_keys_are_read_too(tmp_path):
    history = [{"epoch": 1, "loss": 1.0, "loss_cls": 0.4, "loss_ner": 0.6, "dev": {"entity_f1": 0.5}}]
    _, panels = draw(tmp_path, history, 1)
    assert series(panels["loss"]) == ["cls", "ner"]


def test_hostile_names_are_escaped(tmp_path):
    name = 'R&D <script>"x"</script>/label_accuracy'
    path, panels = draw(tmp_path, [record(1, losses={"<&>": 0.5}, dev={name: 0.7})], 1)
    assert series(panels["loss"]) == ["<&>"] and series(panels["dev"]) == [name]
    assert "<script" not in path.read_text()


def test_empty_history_and_no_selection(tmp_path):
    _, panels = draw(tmp_path, [], 0)
    assert series(panels["loss"]) == [] and selected_labels(panels["dev"]) == []
    _, panels = draw(tmp_path, [record(1), record(2)], 7)  # an epoch the history does not have: no marker
    assert selected_labels(panels["dev"]) == []


def test_deterministic(tmp_path):
    history = [record(e, dev={"label_accuracy": 0.5 + 0.4 * math.sin(e) ** 2}) for e in range(1, 9)]
    a, b = tmp_path / "a.svg", tmp_path / "b.svg"
    write_curves(a, history, 3)
    write_curves(b, [dict(r) for r in history], 3)
    assert a.read_bytes() == b.read_bytes()


def test_reliability_points_merge_bins_until_each_stands_for_ten_predictions():
    from minimtl.machinery.plots import merged
    bins = [(0, None, None), (1, 0.1, 0.0), (2, 0.2, 1.0), (30, 0.5, 0.5), (0, None, None), (3, 0.9, 1.0),
            (12, 0.95, 1.0)]
    (n1, c1, a1), (n2, c2, a2) = merged(bins)  # the first three bins, weighted by count; then the last two
    assert (n1, n2) == (33, 15) and math.isclose(c1, (0.1 + 0.4 + 15) / 33) and math.isclose(a1, (2 + 15) / 33)
    assert math.isclose(c2, (2.7 + 11.4) / 15) and a2 == 1.0
    assert [n for n, _, _ in merged(bins[:-1])] == [36]  # a remainder of 3 joins the last point
    assert merged([(3, 0.5, 1.0)]) == [(3, 0.5, 1.0)]  # fewer than ten in all: one point, all of them


def test_a_run_without_a_test_split_draws_dev_with_counts(tiny_data, tiny_weights, tmp_path):
    import shutil

    from minimtl.machinery.run import train
    from minimtl.machinery.settings import RunConfig
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev"):
        shutil.copy(tiny_data / f"{split}.jsonl", data / f"{split}.jsonl")
    out = tmp_path / "run"
    train(RunConfig(data=[str(data)], weights=str(tiny_weights), out=str(out), epochs=1, batch_size=8),
          log=lambda line: None)
    root = ET.parse(out / "reliability.svg").getroot()
    svg = "{http://www.w3.org/2000/svg}"
    titles = [t.text for t in root.iter(svg + "text") if t.get("font-weight") == "bold"]
    assert titles == ["sentence labels (16) on dev, which T was fitted on",
                      next(t for t in titles if t.startswith("entities ("))]
    counts = [int(t.text.replace(",", "")) for t in root.iter(svg + "text") if t.get("class") == "count"]
    assert counts and all(n >= 1 for n in counts)


def test_the_per_step_loss_is_one_line_across_the_epochs_from_the_start_of_training(tmp_path):
    steps = [[round(k / 40, 4), 2.0 - k / 40] for k in range(1, 41)]  # 40 points per epoch
    history = [record(e) | {"step_losses": steps} for e in (1, 2, 3)]
    _, panels = draw(tmp_path, history, 3)
    line = next(p for p in panels["loss"].iter(SVG + "polyline") if p.get("class") == "steps")
    xs = [float(p.split(",")[0]) for p in line.get("points").split()]
    assert len(xs) == 120 and xs == sorted(xs)
    assert series(panels["loss"]) == ["all tasks, per step (mean of the last 50)", "cls", "ner"]
    assert len(list(panels["loss"].iter(SVG + "circle"))) == 3 * 2 + 2  # no markers on the steps, nor its legend
    epoch_1 = float(panels["loss"].find(f"{SVG}circle").get("cx"))
    assert xs[39] == epoch_1  # the end of epoch 1's steps is where epoch 1's per-task loss is drawn


def test_step_losses_that_are_not_pairs_of_numbers_are_skipped(tmp_path):
    history = [record(1) | {"step_losses": [[0.5, 1.0], "x", [0.7], [0.9, float("nan")], None, [1.0, 0.5]]}]
    _, panels = draw(tmp_path, history, 1)
    line = next(p for p in panels["loss"].iter(SVG + "polyline") if p.get("class") == "steps")
    assert len(line.get("points").split()) == 2
