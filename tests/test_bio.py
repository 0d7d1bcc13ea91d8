"""BIO helpers: valid tags, and constrained decoding that is the exact best valid sequence."""

import itertools

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minimtl.bio import best_valid_paths
from minimtl.bio import chunks, split_tag, transition_mask
from minimtl.machinery.tag_schemes import opened_by_b

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def constrained_decode_batch(log_probs, lengths, tags):
    return best_valid_paths(log_probs, lengths, *(torch.tensor(ok) for ok in transition_mask(tags)))


def constrained_decode(log_probs, tags):  # one sentence: (n, K) -> tag ids
    return constrained_decode_batch(log_probs[None], [log_probs.shape[0]], tags)[0]


def valid(seq):
    start_ok, follow_ok = transition_mask(TAGS)
    return start_ok[seq[0]] and all(follow_ok[a][b] for a, b in zip(seq, seq[1:]))


def is_valid_tag(tag):
    try:
        split_tag(tag)
    except ValueError:
        return False
    return True


def test_tag_shapes():
    assert all(map(is_valid_tag, ["O", "B-PER", "I-misc_thing"]))
    assert not any(map(is_valid_tag, ["", "B", "B-", "X-PER", "o", "BPER"]))


def test_i_continues_only_its_own_type():
    start_ok, follow_ok = transition_mask(TAGS)
    assert start_ok == [True, True, False, True, False]
    assert follow_ok[1][2] and follow_ok[2][2] and not follow_ok[0][2] and not follow_ok[3][2]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TAGS), min_size=1, max_size=12))
def test_opening_every_entity_with_b_keeps_its_entities_and_makes_it_valid_bio(tags):
    rewritten = opened_by_b(tags)
    assert chunks(rewritten) == chunks(tags)  # what seqeval scores does not change
    assert valid([TAGS.index(t) for t in rewritten])  # and a CRF's gold path never takes a forbidden step
    assert opened_by_b(rewritten) == rewritten


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.floats(-8, 0), min_size=5, max_size=5), min_size=1, max_size=5))
def test_constrained_decode_is_the_best_valid_sequence(rows):
    log_probs = torch.tensor(rows, dtype=torch.float64)
    path = constrained_decode(log_probs, TAGS)
    assert len(path) == len(rows) and valid(path)
    score = lambda seq: sum(log_probs[i, t].item() for i, t in enumerate(seq))
    best = max(score(seq) for seq in itertools.product(range(5), repeat=len(rows)) if valid(seq))
    assert abs(score(path) - best) < 1e-9
    argmax = log_probs.argmax(-1).tolist()
    if valid(argmax) and score(argmax) == best:
        assert score(path) == score(argmax)


def test_empty_sentence():
    assert constrained_decode(torch.zeros(0, 5), TAGS) == []


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 7), min_size=1, max_size=6), st.integers(0, 10_000))
def test_batched_decoding_equals_one_sentence_at_a_time(lengths, seed):
    g = torch.Generator().manual_seed(seed)
    log_probs = torch.randn(len(lengths), max(lengths), len(TAGS), generator=g).log_softmax(-1)
    paths = constrained_decode_batch(log_probs, lengths, TAGS)
    assert paths == [constrained_decode(log_probs[b, :n], TAGS) for b, n in enumerate(lengths)]
