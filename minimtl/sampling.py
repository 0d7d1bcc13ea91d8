"""Task sampling: which source each training batch comes from when one model learns from several corpora.

Real corpora are disjoint: CoNLL-2003 has entities and no topics, AG News topics and no entities. So each
batch holds one source's sentences (every sentence in it carries labels for that source's task, and the
lengths are alike, so padding stays low), and the sources take turns:

    proportional   p_i = n_i / sum n        every batch of every source exactly once per epoch, shuffled
    uniform        p_i = 1 / S              small sources are seen as often as large ones
    temperature    p_i = n_i^(1/T) / sum    between the two: T = 1 is proportional, T -> inf uniform
                                            (MT-DNN, jiant; Arivazhagan et al. 2019 for multilingual MT)

n_i counts training sentences. An epoch has as many batches as all sources together, whatever the
sampling, so "epoch" always means the same amount of computation. With uniform or temperature sampling a
source drawn more often than it has batches starts its (shuffled) list again, and one drawn less often
leaves some of its batches for the next epoch's shuffle.
"""

import math


def source_probabilities(sizes, how, temperature=2.0):
    """The probability of drawing each source, from its size (training sentences)."""
    if how == "uniform":
        weights = [1.0] * len(sizes)
    elif how == "temperature":
        # n^(1/T) computed as exp(log(n)/T - the largest of those): a small T would overflow a float
        # (120000 ** 100), and dividing every weight by the largest leaves the probabilities unchanged.
        logs = [math.log(n) / temperature for n in sizes]
        top = max(logs)
        weights = [math.exp(x - top) for x in logs]
    else:
        weights = [float(n) for n in sizes]
    total = sum(weights)
    return [w / total for w in weights]


def interleave(per_source, probabilities, rng):
    """One epoch's (source index, batch) pairs from each source's own (already shuffled) batch list.

    `probabilities` None means proportional: one pass over every batch, shuffled (drawing without
    replacement, so each source's share is exact, not just expected).
    """
    if len(per_source) == 1:
        return [(0, b) for b in per_source[0]]
    if probabilities is None:
        order = [(i, b) for i, batches in enumerate(per_source) for b in batches]
        rng.shuffle(order)
        return order
    n_steps = sum(len(batches) for batches in per_source)
    drawn = rng.choices(range(len(per_source)), weights=probabilities, k=n_steps)
    taken = [0] * len(per_source)
    order = []
    for i in drawn:
        order.append((i, per_source[i][taken[i] % len(per_source[i])]))
        taken[i] += 1
    return order
