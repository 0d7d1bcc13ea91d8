"""Several sources in one run: which one each training batch comes from, and the scores of all of them.

Task sampling, when one model learns from several corpora. Real corpora are disjoint: CoNLL-2003 has
entities and no topics, AG News topics and no entities. So each batch holds one source's sentences (every
sentence in it carries labels for that source's task, and the lengths are alike, so padding stays low), and
the sources take turns:

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

from ..batching import batches, seeded_rng
from ..evaluation import evaluate, head_outputs


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


def epoch_batches(sources, cfg, epoch):
    """The epoch's (source, batch) pairs: each source's batches bucketed by length, then interleaved."""
    per_source = [batches(s.ids["train"], cfg.batch_size, seeded_rng(cfg.seed, epoch, i))
                  for i, s in enumerate(sources)]
    probabilities = None if cfg.sampling == "proportional" else \
        source_probabilities([len(s.splits.train) for s in sources], cfg.sampling, cfg.temperature)
    order = interleave(per_source, probabilities, seeded_rng(cfg.seed, epoch, len(sources)))
    return [(sources[i], batch) for i, batch in order]


def steps_per_epoch(sources, cfg, world=1):
    """Optimizer steps per epoch: each takes grad_accum micro-batches from each of the `world` processes."""
    n_batches = sum(math.ceil(len(s.ids["train"]) / cfg.batch_size) for s in sources)
    return math.ceil(n_batches / (cfg.grad_accum * world))


def evaluate_sources(model, sources, split, forward=None, outputs=None):
    """The metrics of every source that has this split, in one flat dict: plain names when the run has one
    source, "source/metric" when it has several (also if only one of them has a test split). `outputs`:
    {source name: its split's `head_outputs`}, when they are already known."""
    scores = {s.name: evaluate(model, s, split, forward, (outputs or {}).get(s.name)) for s in sources
              if getattr(s.splits, split) is not None}
    if len(sources) == 1:
        return next(iter(scores.values()), {})
    return {f"{name}/{k}": v for name, metrics in scores.items() for k, v in metrics.items()}


def outputs_of(model, sources, split, forward=None):
    """{source name: the `head_outputs` of its `split`} of every source that has that split."""
    return {s.name: head_outputs(model, s, split, forward) for s in sources if getattr(s.splits, split) is not None}
