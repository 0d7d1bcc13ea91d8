import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

from minimtl.metrics import accuracy, entity_scores, evaluate, frame_accuracy, token_accuracy

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


@st.composite
def gold_and_pred(draw):
    """Random gold/pred tag sequences of equal lengths, often invalid BIO (I- after O, I- of another type)."""
    lengths = draw(st.lists(st.integers(0, 10), min_size=1, max_size=6))
    tag = st.sampled_from(TAGS)
    gold = [draw(st.lists(tag, min_size=n, max_size=n)) for n in lengths]
    pred = [draw(st.lists(tag, min_size=n, max_size=n)) for n in lengths]
    return gold, pred


@settings(max_examples=200, deadline=None)
@given(gold_and_pred())
def test_entity_scores_equal_seqeval(data):
    gold, pred = data
    ours = entity_scores(gold, pred)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns on 0/0 and then returns 0.0, as we do
        assert ours["precision"] == pytest.approx(precision_score(gold, pred), abs=1e-9)
        assert ours["recall"] == pytest.approx(recall_score(gold, pred), abs=1e-9)
        assert ours["f1"] == pytest.approx(f1_score(gold, pred), abs=1e-9)
        if not ours["per_type"]:
            return  # seqeval's report has no rows to compare (and fails on empty input)
        report = classification_report(gold, pred, output_dict=True)
    rows = {kind: row for kind, row in report.items() if not kind.endswith(" avg")}
    assert rows.keys() == ours["per_type"].keys()
    for kind, row in rows.items():
        mine = ours["per_type"][kind]
        assert mine["support"] == row["support"]
        for ours_key, theirs_key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert mine[ours_key] == pytest.approx(row[theirs_key], abs=1e-9)
    assert ours["support"] == report["micro avg"]["support"]


def test_entity_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["I-LOC", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-PER"], ["B-LOC", "O"]]
    # gold: PER 0-1, LOC 3, LOC 0 (the stray I- starts one); pred: PER 0-1, PER 3, LOC 0 -> 2 of 3 right.
    scores = entity_scores(gold, pred)
    assert (scores["precision"], scores["recall"], scores["support"]) == (2 / 3, 2 / 3, 3)
    assert scores["per_type"]["PER"] == {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1}
    assert scores["per_type"]["LOC"] == {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}


def test_zero_denominators_give_zero():
    none = entity_scores([["O", "O"]], [["O", "O"]])
    assert none == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "per_type": {}}
    missed = entity_scores([["B-PER"]], [["O"]])
    assert (missed["precision"], missed["recall"], missed["f1"]) == (0.0, 0.0, 0.0)
    assert accuracy([], []) == 0.0 and token_accuracy([], []) == 0.0


def test_accuracies_compare_strings_so_unseen_gold_counts_as_wrong():
    gold_labels = ["flight", "airfare", "flight#airfare"]  # the last one was never in training
    pred_labels = ["flight", "flight", "flight"]
    gold_tags = [["O", "B-city"], ["B-city"], ["O"]]
    pred_tags = [["O", "B-city"], ["O"], ["O"]]
    assert accuracy(gold_labels, pred_labels) == 1 / 3
    assert token_accuracy(gold_tags, pred_tags) == 3 / 4
    assert frame_accuracy(gold_labels, pred_labels, gold_tags, pred_tags) == 1 / 3
    assert frame_accuracy(gold_labels, gold_labels, gold_tags, pred_tags) == 2 / 3


def test_evaluate_reports_what_the_data_has():
    labels, tags = ["a", "b"], [["B-X", "O"], ["O"]]
    joint = evaluate(labels, ["a", "a"], tags, [["B-X", "O"], ["B-X"]])
    assert joint == {"label_accuracy": 0.5, "entity_precision": 0.5, "entity_recall": 1.0, "entity_f1": 2 / 3,
                     "entity_support": 1, "token_accuracy": 2 / 3, "entity_precision/X": 0.5, "entity_recall/X": 1.0,
                     "entity_f1/X": 2 / 3, "entity_support/X": 1, "frame_accuracy": 0.5}
    assert evaluate(labels, ["a", "b"], None, None) == {"label_accuracy": 1.0}
    assert set(evaluate(None, None, tags, tags)) == {"entity_precision", "entity_recall", "entity_f1",
                                                     "entity_support", "token_accuracy", "entity_precision/X",
                                                     "entity_recall/X", "entity_f1/X", "entity_support/X"}


@pytest.mark.parametrize("call", [
    lambda: accuracy(["a"], ["a", "b"]),
    lambda: token_accuracy([["O"]], [["O", "O"]]),
    lambda: entity_scores([["O"], ["O"]], [["O"]]),
    lambda: frame_accuracy(["a"], ["a"], [["O"], ["O"]], [["O"], ["O"]]),
])
def test_misaligned_inputs_are_bugs(call):
    with pytest.raises(ValueError):
        call()
