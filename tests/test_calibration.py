"""Temperature scaling and the expected calibration error (calibration.py), and where inference uses them.

The fit must lower (or keep) the dev NLL (of the gold labels; for the tag head, the log loss of the predicted
entities' probabilities) and change no prediction: every argmax and every decoded path, with and without a
CRF, is the same at the fitted T. ECE is checked against a value worked out by hand. A checkpoint
written before calibration loads with T = 1; one with temperatures reports the scaled probabilities.
"""

import itertools
import json
import math
import shutil
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minimtl import UserError
from minimtl.bio import chunks
from minimtl.extensions.calibration import (ECE_BINS, Logits, entities, entity_nll, expected_calibration_error, fit_temperature,
                                 predictions, reliability, sentence_nll)
from minimtl.bio import viterbi
from minimtl.machinery.checkpoint import load_predictor, write_temperatures
from minimtl.extensions.crf import CRFTokenHead
from minimtl.model import TokenHead

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def over_confident(n, k, scale, seed):
    """Logits `scale` times sharper than the distribution the labels are drawn from: (N, K) logits, (N,) labels."""
    g = torch.Generator().manual_seed(seed)
    true = torch.randn(n, k, generator=g, dtype=torch.float64) * 2
    labels = torch.multinomial(true.softmax(-1), 1, generator=g).squeeze(1)
    return true * scale, labels


def test_fit_recovers_the_temperature_that_made_logits_over_confident():
    logits, labels = over_confident(4000, 5, scale=3.0, seed=0)
    t = fit_temperature(lambda t: sentence_nll(logits, labels, t))
    assert 2.6 < t < 3.4  # the labels were drawn from softmax(logits / 3)
    assert sentence_nll(logits, labels, t) < sentence_nll(logits, labels, 1.0) - 0.1
    assert torch.equal((logits / t).argmax(-1), logits.argmax(-1))


def test_fit_keeps_t_near_one_for_calibrated_logits_and_never_raises_the_nll():
    logits, labels = over_confident(4000, 5, scale=1.0, seed=1)
    t = fit_temperature(lambda t: sentence_nll(logits, labels, t))
    assert 0.9 < t < 1.1
    assert sentence_nll(logits, labels, t) <= sentence_nll(logits, labels, 1.0)
    assert fit_temperature(lambda t: (math.log(t) - 0.7) ** 2) == pytest.approx(math.exp(0.7), rel=1e-3)
    assert fit_temperature(lambda t: 1.0) == 1.0  # nothing to gain: no calibration at all


def decoded_batches(head, seed, scale=4.0, n_batches=6):
    """Random over-confident emissions, gold tags sampled from a calibrated version of them, and the decoded
    paths: per batch, (emissions, word counts, paths, gold entities)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        lengths = torch.randint(1, 7, (8,), generator=g).tolist()
        W = max(lengths)
        true = torch.randn(8, W, len(TAGS), generator=g, dtype=torch.float64) * 2
        gold = torch.multinomial(true.softmax(-1).flatten(0, 1), 1, generator=g).view(8, W)
        entities = [set(chunks([TAGS[k] for k in row[:n]])) for row, n in zip(gold.tolist(), lengths)]
        emissions = true * scale
        out.append((emissions, lengths, head.decode(emissions, lengths), entities))
    return out


@pytest.mark.parametrize("crf", [False, True])
def test_tag_fit_lowers_the_entities_log_loss_and_keeps_every_path(crf):
    torch.manual_seed(0)
    head = (CRFTokenHead if crf else TokenHead)(8, TAGS).double()
    if crf:
        with torch.no_grad():
            for p in head.crf.parameters():
                p.normal_(0, 2)
    batches = decoded_batches(head, seed=2)
    t = fit_temperature(lambda t: entity_nll(head, batches, t))
    assert t > 1.5  # the emissions were made over-confident
    assert entity_nll(head, batches, t) < entity_nll(head, batches, 1.0)
    for emissions, lengths, paths, _ in batches:
        if crf:  # Viterbi over the scaled CRF: every score divided by T
            scaled = viterbi(emissions / t, lengths, *head.crf._scores(float("-inf"), emissions.dtype, t))
        else:  # the constrained decoding of the scaled softmax
            scaled = head.decode(emissions / t, lengths)
        assert scaled == paths


def test_the_entities_log_loss_worked_out_by_hand():
    head = TokenHead(8, TAGS).double()
    emissions = torch.full((1, 2, len(TAGS)), -5.0, dtype=torch.float64)
    emissions[0, 0, 1] = emissions[0, 1, 3] = 5.0  # B-PER, then B-LOC
    batches = [(emissions, [2], [[1, 3]], [{("PER", 0, 0)}])]  # PER is gold, LOC is not
    word = torch.tensor([5.0] + [-5.0] * 4).softmax(0)
    sure, other = word[0].item(), word[1].item()
    per, loc = sure * (1 - other), sure  # PER: B-PER and the next word not I-PER; LOC: the last word
    assert entity_nll(head, batches, 1.0) == pytest.approx(-(math.log(per) + math.log(1 - loc)) / 2)
    assert entity_nll(head, [(emissions[:, :0], [0], [[]], [set()])], 1.0) == 0.0  # nothing predicted


def test_ece_of_a_small_example_worked_out_by_hand():
    confidences = [0.95, 0.9, 0.55, 0.58, 0.25]
    correct = [True, False, True, True, False]
    # Bins of width 1/15: 0.95 -> (14/15, 1], 0.9 -> (13/15, 14/15], 0.55 and 0.58 -> (8/15, 9/15], 0.25 ->
    # (3/15, 4/15]. ECE = 1/5 |1 - 0.95| + 1/5 |0 - 0.9| + 2/5 |1 - 0.565| + 1/5 |0 - 0.25|
    #                   = 0.01 + 0.18 + 0.174 + 0.05
    assert expected_calibration_error(confidences, correct) == pytest.approx(0.414, abs=1e-12)
    rows = reliability(confidences, correct)
    assert len(rows) == ECE_BINS and [r[0] for r in rows] == [0, 0, 0, 1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1, 1]
    assert rows[8][1:] == pytest.approx((0.565, 1.0))
    assert reliability([1.0, 1 / 15], [True, True])[-1][0] == 1  # the top edge belongs to the last bin
    assert expected_calibration_error([], []) == 0.0
    assert expected_calibration_error([0.8] * 10, [True] * 8 + [False] * 2) == pytest.approx(0.0, abs=1e-12)


def test_predictions_judge_entities_by_exact_span_and_type():
    head = TokenHead(8, TAGS).double()
    emissions = torch.full((1, 4, len(TAGS)), -5.0, dtype=torch.float64)
    for i, k in enumerate([1, 2, 0, 3]):  # B-PER I-PER O B-LOC
        emissions[0, i, k] = 5.0
    gold = [{("PER", 0, 1), ("LOC", 2, 3)}]  # PER right; LOC has the wrong span
    logits = Logits([0], None, None, [(emissions, [4], gold)])
    confidences, correct = predictions(SimpleNamespace(ner_head=head), logits, {})["entity"]
    assert correct == [True, False]
    word = torch.tensor([5.0] + [-5.0] * 4).softmax(0)  # each word's distribution: one tag at 5, the others at -5
    sure, other = word[0].item(), word[1].item()
    # PER: B-PER, then I-PER, then a word that does not continue it; LOC: B-LOC on the last word.
    assert confidences == pytest.approx([sure * sure * (1 - other), sure])
    softer, _ = predictions(SimpleNamespace(ner_head=head), logits, {"ner": 4.0})["entity"]
    assert all(s < c for s, c in zip(softer, confidences))


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.sampled_from([0.5, 1.0, 3.0]))
def test_without_a_crf_an_entitys_probability_is_the_share_of_independent_tag_sequences_that_hold_it(seed, n, t):
    head = TokenHead(8, TAGS).double()
    emissions = torch.randn(1, n, len(TAGS), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    path = head.decode(emissions, [n])[0]
    words = (emissions[0] / t).softmax(-1)  # (n, K): each word's tag distribution, independent of the others
    for kind, first, last, probability in entities(head, emissions, [n], [path], t)[0]:
        begin, inside = TAGS.index(f"B-{kind}"), TAGS.index(f"I-{kind}")
        expected = sum(math.prod(words[i, y].item() for i, y in enumerate(seq))
                       for seq in itertools.product(range(len(TAGS)), repeat=n)
                       if seq[first] == begin and all(y == inside for y in seq[first + 1 : last + 1])
                       and (last + 1 == n or seq[last + 1] != inside))
        assert probability == pytest.approx(expected, rel=1e-5)  # the head computes in float32


def test_checkpoint_without_temperatures_loads_with_t_one_and_with_them_scales_probabilities(small, tmp_path):
    before = load_predictor(small)
    assert (before.cls_temperature, before.ner_temperature) == (1.0, 1.0)
    copy = tmp_path / "calibrated"
    shutil.copytree(small, copy)
    write_temperatures(copy, {"cls": 3.0, "ner": 2.0})
    after = load_predictor(copy)
    text = ["Alice flew from Paris to Berlin with Bob Smith last week."]
    (p,), (q,) = before.predictions(text), after.predictions(text)
    assert (q.label, q.tags, [(s.type, s.start, s.end) for s in q.entities]) == \
        (p.label, p.tags, [(s.type, s.start, s.end) for s in p.entities])  # no prediction changes
    assert q.label_probability < p.label_probability  # T > 1 softens
    logits = torch.tensor([math.log(v) for v in p.labels.values()])  # log-probabilities: logits up to a constant
    assert q.label_probability == pytest.approx((logits / 3.0).softmax(0)[0].item(), rel=1e-4)
    # A decoded tag need not be a word's most probable one, so T > 1 may raise its probability: only "changed".
    assert p.entities and all(b.confidence != a.confidence for a, b in zip(p.entities, q.entities))


@pytest.mark.parametrize("value", [{"cls": 0}, {"cls": -1.0}, {"ner": "1"}, {"other": 1.0}, [1.0], {"cls": True}])
def test_bad_temperature_in_a_checkpoint_is_a_one_line_error(small, tmp_path, value):
    copy = tmp_path / "bad"
    shutil.copytree(small, copy)
    config = json.loads((copy / "config.json").read_text())
    config["minimtl"]["temperature"] = value
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="'minimtl.temperature' should map") as error:
        load_predictor(copy)
    assert "\n" not in str(error.value)
