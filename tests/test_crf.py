"""The CRF against brute force: on tiny cases every one of the K^n tag paths can be scored by hand.

Random cases draw a BIO tag set, a CRF with random parameters and a padded batch of up to 3 sentences of
0-4 words; the oracle enumerates all paths with itertools.product.
"""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minimtl.bio import transition_mask
from minimtl.model import IGNORE_INDEX
from minimtl.extensions.crf import CRF, FORBIDDEN


@st.composite
def problems(draw, max_words=4):
    """(tags, crf, emissions (B, W, K), gold (B, W), mask (B, W), lengths), all float64."""
    # O plus, per entity type, its B- tag, its I- tag, both or neither, in any order: K is 1 to 5.
    prefixes = st.sampled_from(["", "B", "I", "BI"])
    tags = ["O"] + [f"{prefix}-{kind}" for kind in "AB" for prefix in draw(prefixes)]
    tags = draw(st.permutations(tags))
    lengths = draw(st.lists(st.integers(0, max_words), min_size=1, max_size=3))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    B, W, K = len(lengths), max(lengths), len(tags)
    crf = CRF(tags).double()
    emissions = torch.randn(B, W, K, generator=g, dtype=torch.float64)
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
        if draw(st.booleans()):  # whole numbers: many paths tie, which decoding must handle
            emissions = emissions.round()
            for p in crf.parameters():
                p.copy_(p.round())
    mask = torch.arange(W) < torch.tensor(lengths)[:, None]
    gold = torch.randint(K, (B, W), generator=g).masked_fill(~mask, IGNORE_INDEX)
    return tags, crf, emissions, gold, mask, lengths


def path_score(tags, crf, emissions, path):
    """s(path) by hand: start + emissions + transitions + end; each step BIO forbids costs FORBIDDEN instead."""
    if not path:
        return 0.0
    start_ok, follow_ok = transition_mask(tags)
    score = crf.start[path[0]].item() if start_ok[path[0]] else FORBIDDEN
    score += sum(emissions[i, t].item() for i, t in enumerate(path))
    score += sum(crf.transitions[a, b].item() if follow_ok[a][b] else FORBIDDEN for a, b in zip(path, path[1:]))
    return score + crf.end[path[-1]].item()


def is_valid(tags, path):
    start_ok, follow_ok = transition_mask(tags)
    return not path or (start_ok[path[0]] and all(follow_ok[a][b] for a, b in zip(path, path[1:])))


def all_paths(tags, n):
    return [list(path) for path in itertools.product(range(len(tags)), repeat=n)]


@settings(max_examples=100, deadline=None)
@given(problems())
def test_log_partition_is_the_logsumexp_of_every_path(problem):
    tags, crf, emissions, gold, mask, lengths = problem
    got = crf.log_partition(emissions, mask)
    for b, n in enumerate(lengths):  # a sentence of no words has one path, the empty one, of score 0
        scores = torch.tensor([path_score(tags, crf, emissions[b], path) for path in all_paths(tags, n)],
                              dtype=torch.float64)
        assert got[b].item() == pytest.approx(scores.logsumexp(0).item(), rel=1e-9, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(problems())
def test_gold_score_is_the_gold_path_summed_by_hand(problem):
    tags, crf, emissions, gold, mask, lengths = problem
    got = crf.gold_score(emissions, gold, mask)
    for b, n in enumerate(lengths):
        by_hand = path_score(tags, crf, emissions[b], gold[b, :n].tolist())
        assert got[b].item() == pytest.approx(by_hand, rel=1e-12)


@settings(max_examples=100, deadline=None)
@given(problems())
def test_decode_finds_the_best_valid_path(problem):
    tags, crf, emissions, gold, mask, lengths = problem
    for b, path in enumerate(crf.decode(emissions, lengths)):
        assert len(path) == lengths[b] and is_valid(tags, path)
        valid_paths = [p for p in all_paths(tags, lengths[b]) if is_valid(tags, p)]
        best = max(path_score(tags, crf, emissions[b], p) for p in valid_paths)
        # Compare scores, not paths: with ties, any best path is right.
        assert path_score(tags, crf, emissions[b], path) == pytest.approx(best, rel=1e-12)


@settings(max_examples=30, deadline=None)
@given(problems())
def test_nll_is_non_negative_and_its_gradient_is_exact(problem):
    tags, crf, emissions, gold, mask, lengths = problem
    emissions.requires_grad_()
    assert crf.nll(emissions, gold, mask).item() >= -1e-9
    # gradcheck perturbs each input in place, so passing the CRF's own parameters checks their gradients too.
    nll = lambda emissions, *parameters: crf.nll(emissions, gold, mask)
    assert torch.autograd.gradcheck(nll, (emissions, crf.transitions, crf.start, crf.end))


@settings(max_examples=50, deadline=None)
@given(problems(), st.sampled_from([1e6, -1e6, 1e300, float("inf"), float("-inf"), float("nan")]))
def test_padding_changes_nothing(problem, value):
    tags, crf, emissions, gold, mask, lengths = problem
    padded = emissions.masked_fill(~mask[..., None], value).requires_grad_()
    emissions.requires_grad_()
    for e in (emissions, padded):
        crf.nll(e, gold, mask).backward()
    assert torch.equal(crf.log_partition(padded, mask), crf.log_partition(emissions, mask))
    assert torch.equal(crf.gold_score(padded, gold, mask), crf.gold_score(emissions, gold, mask))
    assert crf.decode(padded, lengths) == crf.decode(emissions, lengths)
    assert torch.equal(padded.grad, emissions.grad) and not padded.grad[~mask].any()


@settings(max_examples=50, deadline=None)
@given(problems(max_words=6), st.floats(1e3, 1e8))
def test_decode_never_returns_an_invalid_bio_sequence(problem, scale):
    # Emissions far larger than FORBIDDEN: decoding still cannot trade a forbidden step for them.
    tags, crf, emissions, gold, mask, lengths = problem
    assert all(is_valid(tags, path) for path in crf.decode(emissions * scale, lengths))


def test_seqeval_valid_gold_with_a_forbidden_step_costs_a_finite_penalty():
    # `O I-A` is a valid entity for seqeval, so training data may hold it, but BIO forbids the step O -> I-A.
    crf = CRF(["O", "B-A", "I-A"])
    emissions = torch.zeros(1, 2, 3, requires_grad=True)
    mask = torch.ones(1, 2, dtype=torch.bool)
    allowed = crf.nll(emissions, torch.tensor([[0, 1]]), mask)
    forbidden = crf.nll(emissions, torch.tensor([[0, 2]]), mask)
    forbidden.backward()
    assert forbidden.item() - allowed.item() == pytest.approx(-FORBIDDEN)  # large, not inf
    assert all(p.grad.isfinite().all() for p in (emissions, crf.transitions, crf.start, crf.end))


def test_forbidden_transitions_are_fixed_not_learned():
    crf = CRF(["O", "B-A", "I-A", "B-B", "I-B"])
    assert set(crf.state_dict()) == {"transitions", "start", "end"}  # the mask is rebuilt from the tag names
    emissions = torch.randn(2, 4, 5, requires_grad=True)
    crf.nll(emissions, torch.randint(5, (2, 4)), torch.ones(2, 4, dtype=torch.bool)).backward()
    assert not crf.transitions.grad[~crf.follow_ok].any() and not crf.start.grad[~crf.start_ok].any()
    assert crf.transitions.grad[crf.follow_ok].any()


def test_empty_batches_and_tensor_lengths():
    crf = CRF(["O", "B-A", "I-A"])
    nothing = torch.zeros(2, 0, 3)
    assert crf.decode(nothing, torch.tensor([0, 0])) == [[], []]
    assert crf.log_partition(nothing, torch.zeros(2, 0, dtype=torch.bool)).tolist() == [0.0, 0.0]


def test_transitions_learn_what_the_emissions_cannot_see():
    # Emissions say nothing (all zero); only the learned start/transition/end scores can tell a two-word
    # sentence "B-A I-A" from the other valid paths, and training on it makes it the decoded one.
    crf = CRF(["O", "B-A", "I-A"])
    emissions, gold, mask = torch.zeros(1, 2, 3), torch.tensor([[1, 2]]), torch.ones(1, 2, dtype=torch.bool)
    # Untrained, the 5 valid paths (O O, O B-A, B-A O, B-A B-A, B-A I-A) are equally likely.
    assert crf.nll(emissions, gold, mask).exp().item() == pytest.approx(5)
    for _ in range(20):  # plain gradient descent
        crf.zero_grad()
        crf.nll(emissions, gold, mask).backward()
        with torch.no_grad():
            for p in crf.parameters():
                p -= p.grad
    assert crf.nll(emissions, gold, mask).item() < 0.1
    assert crf.decode(emissions, [2]) == [[1, 2]]


def test_entity_probabilities_work_in_inference_mode():
    crf = CRF(["O", "B-A", "I-A"])
    with torch.inference_mode():  # as infer.py predicts
        emissions = torch.randn(2, 3, 3)
        got = crf.chunk_probabilities(emissions, [3, 1], [[(1, 2, 0, 1)], [(1, 2, 0, 0)]])
    assert all(0 < p[0] < 1 for p in got)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(1, 4), min_size=1, max_size=3), st.sampled_from([0.5, 1.0, 2.5]))
def test_an_entitys_probability_is_the_share_of_all_paths_that_hold_exactly_it(seed, lengths, temperature):
    tags = ["O", "B-A", "I-A", "B-B", "I-B", "B-Y"]  # Y is only ever one word long: it has no I- tag
    g = torch.Generator().manual_seed(seed)
    crf = CRF(tags).double()
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    emissions = torch.randn(len(lengths), max(lengths), len(tags), generator=g, dtype=torch.float64)
    # Every possible entity of each sentence: (B-X, I-X, first, last).
    candidates = [[(b, b + 1, first, last) for b in (1, 3) for first in range(n) for last in range(first, n)]
                  + [(5, -1, first, first) for first in range(n)] for n in lengths]
    got = crf.chunk_probabilities(emissions, lengths, candidates, temperature)
    for s, n in enumerate(lengths):
        paths = all_paths(tags, n)
        p = torch.tensor([path_score(tags, crf, emissions[s], path) / temperature for path in paths], dtype=torch.float64)
        p = (p - p.logsumexp(0)).exp().tolist()
        for (begin, inside, first, last), probability in zip(candidates[s], got[s]):
            holds = lambda path: (path[first] == begin and all(t == inside for t in path[first + 1 : last + 1])
                                  and (last + 1 == n or inside < 0 or path[last + 1] != inside))
            assert probability == pytest.approx(sum(q for q, path in zip(p, paths) if holds(path)), abs=1e-9)
