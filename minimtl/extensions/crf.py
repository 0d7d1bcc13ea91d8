"""A linear-chain CRF over words, for BIO tagging.

A per-word softmax picks each word's tag on its own: nothing ties neighbouring words together, so it can
predict `B-LOC I-PER`, or cut one entity in two because each word's best tag was chosen alone. A CRF scores
whole tag sequences instead: a sentence's score is the sum of per-word *emission* scores (what the
encoder says about each word) and learned *transition* scores between neighbouring tags (how likely
`I-LOC` is after `B-LOC`), and training maximises the probability of the gold sequence among all K^n
sequences. The model thus learns tag dependencies rather than predicting each word independently.

The chain runs over WORDS, not sub-tokens: the caller reads the emission of each word at its first
sub-token, so continuation sub-tokens, [CLS], [SEP] and padding never enter the chain. A sentence of n
words is a prefix of the padded width W, marked by a boolean mask (B, W) or by its length.

Score of a tag path y_0 .. y_{n-1} for emissions e (n, K):

    s(y) = start[y_0] + sum_i e_i[y_i] + sum_{i>0} T[y_{i-1}, y_i] + end[y_{n-1}]

and -log p(gold) = log Z - s(gold), where log Z = logsumexp over all paths y of s(y). Summing K^n paths
is hopeless; the forward algorithm shares their common prefixes. With alpha_i(j) the log-sum of the
scores of all paths over words 0..i that end in tag j:

    alpha_0(j) = start[j] + e_0[j]
    alpha_i(j) = e_i[j] + logsumexp_k( alpha_{i-1}(k) + T[k, j] )
    log Z      = logsumexp_j( alpha_{n-1}(j) + end[j] )

which is O(n K^2), all in log space so that nothing overflows. Viterbi decoding is the same recursion
with max in place of logsumexp, plus back-pointers to recover the best path (`viterbi`).

Decoding without a CRF is the same Viterbi (bio.viterbi): the best *valid* BIO sequence of per-word softmax
choices is the best path of a CRF whose emissions are the log-probabilities and whose transitions are fixed,
0 where BIO allows a step and -inf where it forbids one (bio.best_valid_paths).

`CRFTokenHead` is the core's TokenHead with a CRF on top: its loss is the CRF's negative log-likelihood over
words and its decoding the CRF's Viterbi path (the model builder hands it in: machinery/assemble.py).

References: Lafferty, McCallum & Pereira 2001, "Conditional Random Fields: Probabilistic Models for
Segmenting and Labeling Sequence Data"; Lample et al. 2016, "Neural Architectures for Named Entity
Recognition" (the BiLSTM/encoder + CRF recipe used here).
"""

import itertools

import torch
from torch import nn

from ..bio import transition_mask, viterbi
from ..model import TokenHead, at_words

# Score of a transition that BIO forbids (I-X opening a sentence, or I-X after anything but B-X / I-X).
# Training uses this finite value, not -inf: data that are valid for seqeval may still contain `O I-X`
# (seqeval reads it as a new entity), and with -inf such a gold path would have log-probability -inf, an
# infinite loss for the whole batch. With -1e4 that sentence just costs 1e4 more per forbidden step while
# its gradient stays the ordinary bounded one (marginals minus gold indicators), and the partition
# function is unchanged for all practical purposes: exp(-1e4) is 0 next to any allowed path. Decoding
# uses a true -inf instead, so a forbidden transition can never be predicted, however large the emissions.
FORBIDDEN = -1e4


class CRF(nn.Module):
    def __init__(self, tags: list[str]):
        super().__init__()
        K = len(tags)
        # Zeros: before training the CRF adds nothing to the emissions but the BIO constraints.
        self.transitions = nn.Parameter(torch.zeros(K, K))  # [from, to]
        self.start = nn.Parameter(torch.zeros(K))
        self.end = nn.Parameter(torch.zeros(K))  # the end of a sentence has no BIO constraint
        # Transitions that BIO forbids are fixed, not learned: an invalid path then never gets decoded nor
        # takes probability mass, and the model spends no capacity learning what the scheme already rules
        # out. The masks follow from the tag names, so they are rebuilt here, not saved in the state dict.
        start_ok, follow_ok = transition_mask(tags)
        self.register_buffer("start_ok", torch.tensor(start_ok), persistent=False)  # (K,)
        self.register_buffer("follow_ok", torch.tensor(follow_ok), persistent=False)  # (K_prev, K)

    def _scores(self, forbidden, dtype, temperature=1.0):
        """start (K,), transitions (K, K) and end (K,) in `dtype`, BIO-forbidden entries set to `forbidden`,
        all divided by `temperature` (calibration.py).

        masked_fill passes no gradient to the filled entries, so the parameters under the mask never move.
        """
        start = self.start.masked_fill(~self.start_ok, forbidden)
        transitions = self.transitions.masked_fill(~self.follow_ok, forbidden)
        return tuple(s.to(dtype) / temperature for s in (start, transitions, self.end))

    def log_partition(self, emissions, mask):
        """log Z per sentence: emissions (B, W, K), mask (B, W) True on real words (a prefix) -> (B,)."""
        return self.forward_scores(emissions, mask)[1]

    def forward_scores(self, emissions, mask, temperature=1.0):
        """The forward algorithm: (alpha (B, W, K), alpha_i(j) at every word i, a finished sentence's kept from
        its last word on; log Z (B,)). `log_partition` needs only log Z; an entity's probability
        (`chunk_probabilities`) reads alpha at its first word. With a `temperature` T, of the CRF whose every
        score is divided by T (calibration.py)."""
        B, W, K = emissions.shape
        if W == 0:  # zeros (B,) that stay on the graph, so backward() works on a batch of empty sentences
            return emissions, emissions.sum((1, 2))
        start, transitions, end = self._scores(FORBIDDEN, emissions.dtype, temperature)
        # Padding is zeroed first so that no value there (not even inf or nan) can reach the result.
        emissions = emissions.masked_fill(~mask[..., None], 0) / temperature
        alpha = [start + emissions[:, 0]]  # (B, K) each
        for i in range(1, W):
            step = (alpha[-1][:, :, None] + transitions).logsumexp(1) + emissions[:, i]  # (B, K_prev, K) -> (B, K)
            alpha.append(torch.where(mask[:, i, None], step, alpha[-1]))  # a finished sentence keeps its alpha
        log_z = (alpha[-1] + end).logsumexp(1)  # (B,)
        return torch.stack(alpha, 1), torch.where(mask[:, 0], log_z, 0)  # a sentence of no words: one (empty) path

    def gold_score(self, emissions, tags, mask):
        """s(gold) per sentence: emissions (B, W, K), tags (B, W) (ignored where mask is False) -> (B,)."""
        B, W, K = emissions.shape
        if W == 0:
            return emissions.sum((1, 2))
        start, transitions, end = self._scores(FORBIDDEN, emissions.dtype)
        tags = tags.masked_fill(~mask, 0)  # padding may hold -100; any real index will do, it is masked out
        emitted = emissions.gather(2, tags[..., None]).squeeze(2)  # (B, W)
        stepped = transitions[tags[:, :-1], tags[:, 1:]]  # (B, W-1): the step into word i, for i >= 1
        lengths = mask.sum(1)  # (B,)
        last = tags.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)  # (B,)
        score = (torch.where(mask, emitted, 0).sum(1)
                 + torch.where(mask[:, 1:], stepped, 0).sum(1)
                 + start[tags[:, 0]] + end[last])
        return torch.where(lengths > 0, score, 0)

    def nll(self, emissions, tags, mask):
        """Mean over sentences of -log p(gold tags): a scalar >= 0, the training loss."""
        return (self.log_partition(emissions, mask) - self.gold_score(emissions, tags, mask)).mean()

    @torch.no_grad()
    def chunk_probabilities(self, emissions, lengths, found, temperature=1.0):
        """p(entity | sentence) of each chunk in `found` (per sentence, a list of (B-X id, I-X id or -1 where X
        has no I- tag, first, last)):
        the probability that the words first..last are exactly one X entity, i.e. the summed probability of
        every path with B-X at `first`, I-X up to `last` and anything but I-X after it. Emissions (B, W, K),
        word counts (B,) -> per sentence, a list of floats.

        With forward scores alpha_i(k) (all paths over words 0..i ending in k, `forward_scores`) and
        backward scores beta_i(k) (all paths over words i+1..n-1 after k, with the end score), those paths sum
        to alpha_first(B-X) + the chunk's own steps + log sum_{k != I-X} exp(T[I-X, k] + e_{last+1}[k] +
        beta_{last+1}(k)), in log space; minus log Z. The same tables give every chunk of a sentence.
        """
        B, W, K = emissions.shape
        lengths = torch.as_tensor(lengths)
        mask = lengths[:, None] > torch.arange(W)  # (B, W)
        alpha, log_z = self.forward_scores(emissions, mask, temperature)  # (B, W, K), (B,)
        start, transitions, end = self._scores(FORBIDDEN, emissions.dtype, temperature)
        e = emissions.masked_fill(~mask[..., None], 0) / temperature
        beta = [end.expand(B, K)]  # (B, K) each, from the last word back
        for i in range(W - 2, -1, -1):  # beta_i from beta_{i+1}; at a sentence's last word beta is the end score
            step = (transitions + e[:, i + 1, None, :] + beta[-1][:, None, :]).logsumexp(2)  # (B, K_prev)
            beta.append(torch.where(mask[:, i + 1, None], step, end))
        beta = torch.stack(beta[::-1], 1)  # (B, W, K)
        b, begin, inside, first, last = chunk_columns(found)  # every chunk of the batch at once: (J,) each
        # (J, W): each chunk's words after its first
        within = (first[:, None] < torch.arange(W)) & (torch.arange(W) <= last[:, None])
        i_x = inside.clamp(min=0)  # a type with no I- tag has one-word chunks only: nothing reads its I-X
        score = alpha[b, first, begin]  # (J,)
        # The chunk's own steps: B-X -> I-X once, then I-X -> I-X, and I-X's emissions on the words after the first.
        steps = transitions[begin, i_x] + (last - first - 1) * transitions[i_x, i_x]
        score = score + torch.where(last > first, steps, 0)
        score = score + torch.where(within, e[b, :, i_x], 0).sum(1)
        tag = torch.where(last > first, i_x, begin)  # the chunk's last tag
        after = (last + 1).clamp(max=W - 1)
        following = transitions[tag] + e[b, after] + beta[b, after]  # (J, K): the next word's tag, if there is one
        following = following.masked_fill(torch.arange(K) == inside[:, None], float("-inf"))  # anything but I-X
        score = score + torch.where(last + 1 < lengths[b], following.logsumexp(-1), end[tag])
        return per_sentence((score - log_z[b]).exp().tolist(), found)

    def decode(self, emissions, lengths):
        """Viterbi: the best valid tag path per sentence: emissions (B, W, K), word counts (B,) -> B lists."""
        return viterbi(emissions, lengths, *self._scores(float("-inf"), emissions.dtype))


def chunk_columns(found):
    """Per sentence, lists of chunks (B-X id, I-X id or -1, first, last) -> the chunks of every sentence as
    five (J,) columns: sentence, B-X, I-X, first, last."""
    rows = [(b, *chunk) for b, mine in enumerate(found) for chunk in mine]
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 5).T


def per_sentence(values, found):
    """One value per chunk, in `chunk_columns` order -> per sentence, the list of its chunks' values."""
    ends = itertools.accumulate(len(mine) for mine in found)
    return [values[end - len(mine) : end] for mine, end in zip(found, ends)]


class CRFTokenHead(TokenHead):
    """The tag head with a CRF over the words: the same layers, then the CRF's likelihood and Viterbi path."""

    def __init__(self, hidden_size, tags, dropout=0.1, mix=None, neck=None):
        super().__init__(hidden_size, tags, dropout, mix, neck)
        self.crf = CRF(self.tags)

    def loss(self, logits, tags, words):
        """The CRF's negative log-likelihood of each sentence's tag path over its words (every training word has
        a tag id, because the training split defines the tag vocabulary)."""
        emissions, mask = at_words(logits, words)
        return self.crf.nll(emissions.float(), tags.gather(1, words.clamp(min=0)), mask)

    def decode(self, emissions, lengths):
        return self.crf.decode(emissions.float(), lengths)
