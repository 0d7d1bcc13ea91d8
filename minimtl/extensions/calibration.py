"""Calibration: making a reported probability mean what it says, and measuring how far it is from that.

A model is *calibrated* when, of all its predictions made with confidence 0.8, 80% are right. Networks
trained with cross-entropy tend to be over-confident (Guo, Pleiss, Sun & Weinberger 2017, "On Calibration of
Modern Neural Networks"): training keeps pushing the gold logit up long after the argmax is right.

**Temperature scaling** (same paper) fixes most of it with one number per head. After training, with every
weight fixed, the head's logits z are divided by a scalar T > 0 before the softmax, p = softmax(z / T), and T
is chosen to minimise a negative log-likelihood on the dev split. T > 1 softens over-confident
probabilities, T < 1 sharpens under-confident ones. With a CRF, T divides the emissions AND the start,
transition and end scores, so every path score becomes s(y) / T.

Which likelihood: that of the probabilities the head reports. For the sentence head that is the softmax of
the gold label. The tag head reports one probability per predicted entity (that this exact span and type is
right: `entities`), a product over its words or a sum over CRF paths; so its T minimises the log loss
of those, -log p for a predicted entity that is gold and -log(1 - p) for one that is not. A T fitted on each
word's own tag instead calibrates the words, and the product of calibrated words is not a calibrated entity:
on SNIPS with a frozen backbone the word-level T made the entities' ECE worse than no calibration at all
(docs/results.md, "Calibrated confidences").

**Why a temperature changes no prediction** (accuracy and F1 stay the same to the last digit):
- sentence labels: z / T is z times a positive number, so argmax_k z_k / T = argmax_k z_k.
- tags with a CRF: Viterbi picks argmax_y s(y) / T = argmax_y s(y), since every path's score is divided by
  the same T.
- tags without a CRF: decoding picks the valid path with the largest sum_i log softmax(e_i / T)[y_i]
  = (1/T) sum_i e_i[y_i] - sum_i logsumexp(e_i / T). The second sum is the same for every path, and the BIO
  constraints cost 0 or -inf whatever T, so the best path is that of sum_i e_i[y_i] at every T.
Only the reported probabilities change: the sentence softmax, and each entity's probability of being exactly
right (`entities`: a product of word probabilities, or with a CRF a sum over the paths that hold it).

**The fit.** As a function of beta = 1/T, the sentence NLL(beta) = mean_n [logsumexp_k(beta z_nk) - beta
z_n,gold] is convex (a log-sum-exp of functions linear in beta, minus a linear one), so it has a single
minimum along log T. The entities' log loss has no such guarantee. So the search first scans a coarse grid of
log T and then narrows the best cell by golden-section search: no gradients, learning rates or randomness.
The logits are computed once (evaluation.head_outputs, the same pass that scores the split), and so are the
decoded paths, which T does not change; each trial T only rescales the scores, so the encoder never runs again.

**Expected calibration error** (ECE; Naeini et al. 2015, as Guo et al. use it): the predictions are put into
M = 15 equal-width bins by confidence, (0, 1/15], (1/15, 2/15], ..., (14/15, 1], and

    ECE = sum_b |B_b| / N * |accuracy(B_b) - mean confidence(B_b)|

the average gap between how sure the model says it is and how often it is right. For sentence labels the
confidence is the top softmax probability and "right" is argmax == gold. For entities it is the probability
infer.py prints beside each predicted entity, that this exact span and type is right, and "right" means it
is a gold entity. ECE here measures the entities a user sees (a missed gold entity has no confidence to judge).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..bio import chunks, split_tag
from ..evaluation import head_outputs
from ..model import IGNORE_INDEX
from .crf import CRFTokenHead, chunk_columns, per_sentence

ECE_BINS = 15
T_RANGE = (0.05, 20)  # far beyond what a trained head needs
LOG_T_RANGE = tuple(map(math.log, T_RANGE))
LOG_T_GRID = 24  # cells of the first scan over LOG_T_RANGE: log T in steps of 0.25
LOG_T_TOLERANCE = 1e-4  # the search stops when log T is known to this: T to 0.01%
GOLDEN = (math.sqrt(5) - 1) / 2
PROBABILITY_FLOOR = 1e-12  # an entity's probability is kept this far from 0 and 1, where its log loss is infinite
# Predictions (labelled dev sentences, predicted dev entities) below which a head keeps T = 1: a T fitted on
# 20 sentences fitted their accidents (0.32 on a user's set), and made the test confidences worse.
MIN_TO_FIT = 100


@dataclass
class Logits:
    """What the heads said about one split of one source, computed once for every trial temperature."""

    order: list[int]  # the split's sentence behind each row below: batches run shortest first
    cls: torch.Tensor | None  # (N, C) sentence logits; None without a sentence task
    labels: torch.Tensor | None  # (N,) gold class ids, IGNORE_INDEX for a class the model never saw
    # Per batch of sentences: emissions (B, W, K) at each word's first sub-token, word counts (B,), and the
    # sentences' gold entities.
    tag_batches: list[tuple[torch.Tensor, list[int], list[set]]]


def collect(source, split, outputs):
    """The split's `Logits`: the heads' `outputs` (evaluation.head_outputs) as float64 (a smooth NLL to
    minimise), with the gold labels and entities of their sentences."""
    examples = getattr(source.splits, split)
    order, cls, labels, tag_batches = [], [], [], []
    for index, sentence_logits, emissions, lengths in outputs:
        order += index
        if sentence_logits is not None:
            cls.append(sentence_logits.double())
            labels.append(torch.tensor([source.labels.id(examples[i].label) for i in index]))
        if emissions is not None:
            tag_batches.append((emissions.double(), lengths, [set(chunks(examples[i].tags)) for i in index]))
    if not cls:
        return Logits(order, None, None, tag_batches)
    return Logits(order, torch.cat(cls), torch.cat(labels), tag_batches)


# --- what the tag head reports: each entity's probability ------------------------------------------------

def entities(head, emissions, lengths, paths, temperature=1.0):
    """The entities of each decoded path, with the probability that each one is exactly right: per sentence,
    a list of (type, first word, last word, probability). `temperature`: the head's calibrated T
    (calibration.py), which changes these probabilities and never the paths.

    The probability is that of the entity itself, the words first..last being one X entity (B-X, then
    I-X, then no I-X), which is what a user acts on and what calibration judges: with a CRF, summed over
    every path that has it (CRF.chunk_probabilities); without one, where the words' tags are
    independent, the product of the words' softmax probabilities of B-X and I-X and of the next word's
    probability of not being I-X. A mean of the words' probabilities would call a five-word entity whose
    words are each 90% sure 90% sure, when all five are right together far less often.
    """
    found = [chunks([head.tags[k] for k in path]) for path in paths]
    # A type seen only in one-word entities has no I- tag: nothing can continue it (-1).
    continued_by = {kind: head.tags.index(f"I-{kind}") if f"I-{kind}" in head.tags else -1
                    for kind in {split_tag(tag)[1] for tag in head.tags}}
    ids = [[(head.tags.index(f"B-{kind}"), continued_by[kind], first, last) for kind, first, last in sentence]
           for sentence in found]
    emissions = emissions.float()
    if isinstance(head, CRFTokenHead):
        probabilities = head.crf.chunk_probabilities(emissions, lengths, ids, temperature)
    else:
        probabilities = word_product(emissions, lengths, ids, temperature)
    return [[(*chunk, p) for chunk, p in zip(sentence, ps)] for sentence, ps in zip(found, probabilities)]


def word_product(emissions, lengths, ids, temperature):
    """Without a CRF, an entity's probability: the product of its words' softmax probabilities of B-X and
    I-X and of the next word's probability of not being I-X. `ids`: per sentence, a list of (B-X id, I-X id or
    -1, first, last) -> per sentence, a list of floats. Every entity of the batch at once."""
    W = emissions.shape[1]
    b, begin, inside, first, last = chunk_columns(ids)  # every entity of the batch at once: (J,) each
    log_p = (emissions / temperature).log_softmax(-1)  # (B, W, K)
    # (J, W): each entity's words after its first
    within = (first[:, None] < torch.arange(W)) & (torch.arange(W) <= last[:, None])
    i_x = inside.clamp(min=0)  # a type with no I- tag has one-word entities only: nothing reads its I-X
    score = log_p[b, first, begin] + torch.where(within, log_p[b, :, i_x], 0).sum(1)  # (J,)
    after = (last + 1).clamp(max=W - 1)
    continues = (last + 1 < torch.as_tensor(lengths)[b]) & (inside >= 0)
    score = score + torch.where(continues, torch.log1p(-log_p[b, after, i_x].exp()), 0)
    return per_sentence(score.exp().tolist(), ids)


# --- fitting T ----------------------------------------------------------------------------------------------

def fit_temperature(nll):
    """The T > 0 that minimises `nll(T)`: the best of a grid of log T, then golden-section search between its
    neighbours.

    Never worse than no calibration: if the search ends above nll(1) (float rounding can tie), T = 1 is kept.
    When the data have no mistake at all (every gold label the arg-max, every predicted entity gold), the NLL
    falls towards 0 as T -> 0 and has no minimum: the search then ends at the bottom of LOG_T_RANGE,
    which would make every later prediction near-certain on the word of a dev split too easy to say
    anything; T = 1 is kept then too."""
    grid = [LOG_T_RANGE[0] + i * (LOG_T_RANGE[1] - LOG_T_RANGE[0]) / LOG_T_GRID for i in range(LOG_T_GRID + 1)]
    best = min(range(len(grid)), key=lambda i: nll(math.exp(grid[i])))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, LOG_T_GRID)]
    a, b = hi - GOLDEN * (hi - lo), lo + GOLDEN * (hi - lo)  # two inner points, a < b
    fa, fb = nll(math.exp(a)), nll(math.exp(b))
    while hi - lo > LOG_T_TOLERANCE:
        if fa <= fb:  # the minimum is left of b
            hi, b, fb = b, a, fa
            a = hi - GOLDEN * (hi - lo)
            fa = nll(math.exp(a))
        else:  # right of a
            lo, a, fa = a, b, fb
            b = lo + GOLDEN * (hi - lo)
            fb = nll(math.exp(b))
    t, best = (math.exp(a), fa) if fa <= fb else (math.exp(b), fb)
    at_the_edge = math.log(t) - LOG_T_RANGE[0] <= 2 * LOG_T_TOLERANCE
    return t if best < nll(1.0) and not at_the_edge else 1.0


@torch.no_grad()
def sentence_nll(logits, labels, temperature):
    """Mean -log p(gold class) under softmax(z / T): logits (N, C), labels (N,) with IGNORE_INDEX skipped."""
    return float(F.cross_entropy(logits / temperature, labels, ignore_index=IGNORE_INDEX))


@torch.no_grad()
def entity_nll(head, decoded, temperature):
    """Mean log loss of the predicted entities' probabilities under T: -log p for each one that is gold,
    -log(1 - p) for each one that is not. `decoded`: per batch, (emissions, word counts, decoded paths, the
    sentences' gold entities); the paths are those of every T. 0.0 when nothing was predicted."""
    return log_loss(*judged_entities(head, decoded, temperature))


def log_loss(confidences, correct):
    """Mean of -log p where `correct`, -log(1 - p) where not; 0.0 for no predictions."""
    total = 0.0
    for p, ok in zip(confidences, correct):
        p = min(max(p, PROBABILITY_FLOOR), 1 - PROBABILITY_FLOOR)
        total -= math.log(p) if ok else math.log1p(-p)
    return total / max(len(confidences), 1)


def judged_entities(head, decoded, temperature):
    """(confidences, correct): each predicted entity's probability under T, and whether it is gold.
    `decoded`: per batch, (emissions, word counts, decoded paths, the sentences' gold entities)."""
    confidences, correct = [], []
    for emissions, lengths, paths, gold_entities in decoded:
        for found, gold in zip(entities(head, emissions, lengths, paths, temperature), gold_entities):
            for kind, first, last, probability in found:
                confidences.append(probability)
                correct.append((kind, first, last) in gold)
    return confidences, correct


def decoded_batches(head, logits):
    """`Logits.tag_batches` with each batch's decoded paths beside its emissions and word counts: (emissions,
    word counts, paths, gold entities). A temperature changes no path, so they are decoded once."""
    return [(e, lengths, head.decode(e, lengths), gold) for e, lengths, gold in logits.tag_batches]


def fit_temperatures(model, sources, split="dev", forward=None, log=lambda line: None, outputs=None):
    """{"cls": T, "ner": T} for the heads the model has, each fitted on every source's `split` that has the
    head's labels (a source without that split, or a head with no such data, gets no T). `forward`: what
    computes the outputs (evaluation.head_outputs), such as a frozen backbone's cache (features.CachedModel);
    `outputs`: {source name: those outputs}, when the caller has them already.
    A head with fewer than MIN_TO_FIT predictions there keeps T = 1, and `log` says why."""
    logits = [collect(s, split, outputs[s.name] if outputs else head_outputs(model, s, split, forward))
              for s in sources if getattr(s.splits, split) is not None]
    out = {}
    cls = [x for x in logits if x.cls is not None]
    if cls and model.cls_head is not None:
        z, y = torch.cat([x.cls for x in cls]), torch.cat([x.labels for x in cls])
        if (y != IGNORE_INDEX).any():
            out["cls"] = fit_enough(lambda t: sentence_nll(z, y, t), int((y != IGNORE_INDEX).sum()),
                                    "labelled sentences", "cls", log)
    head = model.ner_head
    decoded = [batch for x in logits for batch in decoded_batches(head, x)] if head is not None else []
    if decoded:
        found = len(judged_entities(head, decoded, 1.0)[0])
        out["ner"] = fit_enough(lambda t: entity_nll(head, decoded, t), found, "predicted entities", "ner", log)
    return out


def fit_enough(nll, n, what, head, log):
    """fit_temperature(nll) when `n` predictions are enough to fit it on (MIN_TO_FIT), else 1."""
    if n >= MIN_TO_FIT:
        return fit_temperature(nll)
    log(f"calibration: {head} T = 1, not fitted: dev has {n} {what}, and a temperature fitted on fewer than "
        f"{MIN_TO_FIT} follows their accidents")
    return 1.0


# --- measuring calibration ------------------------------------------------------------------------------

def predictions(model, logits, temperatures):
    """{"label": (confidences, correct), "entity": (confidences, correct)} for the tasks `logits` has: one
    pair per predicted sentence label and per predicted entity, under the given temperatures (1 if absent)."""
    out = {}
    if logits.cls is not None:
        probs = (logits.cls / temperatures.get("cls", 1.0)).softmax(-1)  # (N, C)
        confidence, predicted = probs.max(-1)
        out["label"] = (confidence.tolist(), (predicted == logits.labels).tolist())
    if logits.tag_batches:
        out["entity"] = judged_entities(model.ner_head, decoded_batches(model.ner_head, logits),
                                        temperatures.get("ner", 1.0))
    return out


def reliability(confidences, correct, bins=ECE_BINS):
    """Per equal-width confidence bin (0, 1/M], ..., ((M-1)/M, 1]: (count, mean confidence, accuracy);
    an empty bin gives (0, None, None)."""
    members = [[] for _ in range(bins)]
    for c, ok in zip(confidences, correct):
        members[min(max(math.ceil(c * bins) - 1, 0), bins - 1)].append((c, ok))
    return [(len(m), sum(c for c, _ in m) / len(m), sum(ok for _, ok in m) / len(m)) if m else (0, None, None)
            for m in members]


def expected_calibration_error(confidences, correct, bins=ECE_BINS):
    """sum over bins of |bin| / N * |accuracy - mean confidence|; 0.0 for no predictions."""
    n = len(confidences)
    return sum(count / n * abs(accuracy - confidence)
               for count, confidence, accuracy in reliability(confidences, correct, bins) if count)


def calibration_report(model, sources, split, temperatures, outputs):
    """ECE before (T = 1) and after calibration on `split` of every source that has it, read from the heads'
    `outputs` {source name: evaluation.head_outputs of the split} (the ones its scores came from), and the
    predictions behind them pooled over the sources, for a reliability diagram:

        ({"label_ece_before", "label_ece_after", "entity_ece_before", "entity_ece_after"} (those that apply;
          "source/..." when there are several sources, as a run names the metrics of several sources),
         {"label" | "entity": {"before" | "after": (confidences, correct)}})
    """
    scores, pooled = {}, {}
    for source in sources:
        if getattr(source.splits, split) is None:
            continue
        logits = collect(source, split, outputs[source.name])
        prefix = f"{source.name}/" if len(sources) > 1 else ""
        for when, preds in (("before", predictions(model, logits, {})),
                            ("after", predictions(model, logits, temperatures))):
            for kind, (confidences, correct) in preds.items():
                scores[f"{prefix}{kind}_ece_{when}"] = expected_calibration_error(confidences, correct)
                mine = pooled.setdefault(kind, {}).setdefault(when, ([], []))
                mine[0].extend(confidences)
                mine[1].extend(correct)
    return dict(sorted(scores.items())), pooled
