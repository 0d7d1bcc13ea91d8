"""Evaluation metrics, written out so that it is plain what is counted.

Everything compares strings, not ids: a dev/test label or tag never seen in training has no id and the model can
never predict it, but here it is simply a gold value that no prediction matches, so it counts as wrong instead of
being silently dropped.

Entity scores follow seqeval's default mode, which is how published NER and slot-filling F1 is computed: an
entity counts as found only if its type and its exact span both match, with spans from `bio.chunks`. Every ratio
with a zero denominator is 0.0, as in seqeval.
"""

from collections import Counter

from .bio import chunks

ENTITY_SCORES = ("precision", "recall", "f1", "support")  # support: the gold entities' count


def accuracy(gold, pred):
    """Fraction of sentence labels predicted exactly."""
    _check_same_length(gold, pred, "labels")
    return _ratio(sum(g == p for g, p in zip(gold, pred)), len(gold))


def token_accuracy(gold_tags, pred_tags):
    """Fraction of words whose tag is exactly right. Flattering ('O' words are easy), so report entity F1."""
    pairs = [(g, p) for gold, pred in _sentences(gold_tags, pred_tags) for g, p in zip(gold, pred)]
    return _ratio(sum(g == p for g, p in pairs), len(pairs))


def entity_scores(gold_tags, pred_tags):
    """The ENTITY_SCORES micro-averaged over all entities, and "per_type": {type: the same four numbers}."""
    correct, predicted, actual = Counter(), Counter(), Counter()
    for gold, pred in _sentences(gold_tags, pred_tags):
        gold_chunks, pred_chunks = set(chunks(gold)), set(chunks(pred))
        actual.update(kind for kind, _, _ in gold_chunks)
        predicted.update(kind for kind, _, _ in pred_chunks)
        correct.update(kind for kind, _, _ in gold_chunks & pred_chunks)
    scores = _prf(sum(correct.values()), sum(predicted.values()), sum(actual.values()))
    # Micro averaging pools every entity, so frequent types dominate it: per-type rows show the rare ones.
    scores["per_type"] = {kind: _prf(correct[kind], predicted[kind], actual[kind])
                          for kind in sorted(actual.keys() | predicted.keys())}
    return scores


def frame_accuracy(gold_labels, pred_labels, gold_tags, pred_tags):
    """Fraction of sentences with the label and every tag right (the "semantic frame" accuracy of joint NLU)."""
    _check_same_length(gold_labels, pred_labels, "labels")
    if len(gold_labels) != len(gold_tags):
        raise ValueError(f"{len(gold_labels)} gold labels but {len(gold_tags)} gold tag sequences")
    tags_right = [gold == pred for gold, pred in _sentences(gold_tags, pred_tags)]
    return _ratio(sum(g == p and ok for g, p, ok in zip(gold_labels, pred_labels, tags_right)), len(gold_labels))


def evaluate(gold_labels=None, pred_labels=None, gold_tags=None, pred_tags=None):
    """Every metric that applies, as one flat dict of numbers for a JSON log line. Pass None for a task the
    data does not have. Each entity type gets the micro scores' four numbers under its own name ("entity_f1/PER")."""
    results = {}
    if gold_labels is not None:
        results["label_accuracy"] = accuracy(gold_labels, pred_labels)
    if gold_tags is not None:
        scores = entity_scores(gold_tags, pred_tags)
        results.update({f"entity_{name}": scores[name] for name in ENTITY_SCORES})
        results["token_accuracy"] = token_accuracy(gold_tags, pred_tags)
        for kind, row in scores["per_type"].items():
            results.update({f"entity_{name}/{kind}": row[name] for name in ENTITY_SCORES})
    if gold_labels is not None and gold_tags is not None:
        results["frame_accuracy"] = frame_accuracy(gold_labels, pred_labels, gold_tags, pred_tags)
    return results


def _prf(correct, predicted, actual):
    p, r = _ratio(correct, predicted), _ratio(correct, actual)
    return dict(zip(ENTITY_SCORES, (p, r, _ratio(2 * p * r, p + r), actual)))


def _ratio(numerator, denominator):
    return numerator / denominator if denominator else 0.0


def _sentences(gold_tags, pred_tags):
    """Pairs of (gold, pred) tag sequences, checked to line up: a mismatch here is a bug, not bad data."""
    _check_same_length(gold_tags, pred_tags, "tag sequences")
    for i, (gold, pred) in enumerate(zip(gold_tags, pred_tags)):
        if len(gold) != len(pred):
            raise ValueError(f"sentence {i}: {len(gold)} gold tags but {len(pred)} predicted")
    return zip(gold_tags, pred_tags)


def _check_same_length(a, b, what):
    if len(a) != len(b):
        raise ValueError(f"{len(a)} gold {what} but {len(b)} predicted")
