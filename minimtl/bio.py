"""The BIO tag scheme: what a valid tag is, and how a tag sequence becomes entity chunks.

Chunking follows seqeval's default (conlleval-compatible) mode, because that is how every published
NER/slot-filling number is computed: an `I-X` that does not continue an entity of type X (it follows `O`,
the start of the sentence, or an entity of another type) *starts* a new entity instead of being dropped.
"""

from functools import lru_cache

import torch

def split_tag(tag):
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', ''). Raises ValueError for anything else."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if prefix not in ("B", "I") or not sep or not kind:
        raise ValueError(f"tag {tag!r} is not O, B-TYPE or I-TYPE")
    return prefix, kind


def chunks(tags):
    """Entity chunks of one sentence as (type, first, last) word indices, inclusive, in order."""
    found = []
    start, current = None, ""
    for i, tag in enumerate(tags):
        prefix, kind = split_tag(tag)
        continues = prefix == "I" and start is not None and kind == current
        if start is not None and not continues:
            found.append((current, start, i - 1))
            start, current = None, ""
        if prefix == "B" or (prefix == "I" and not continues):
            start, current = i, kind
    if start is not None:
        found.append((current, start, len(tags) - 1))
    return found


def transition_mask(tags):
    """(start_ok (K,), follow_ok (K, K)): which tags may open a sentence, and which may follow which.

    In valid BIO, `I-X` only continues an entity of type X: it may follow `B-X` or `I-X`, nothing else.
    """
    parts = [split_tag(t) for t in tags]
    start_ok = [prefix != "I" for prefix, _ in parts]
    follow_ok = [[prefix != "I" or (prev_prefix != "O" and prev_kind == kind)
                  for prefix, kind in parts] for prev_prefix, prev_kind in parts]
    return start_ok, follow_ok


def constrained_decode(log_probs, tags):
    """The most probable *valid* BIO sequence (Viterbi) for per-word log-probabilities (n, K) -> tag ids.

    A per-word argmax can emit `O I-LOC`, which seqeval reads as a new (usually wrong) entity. Decoding
    under the BIO constraints costs O(n K^2) and turns such slips into the best valid reading instead.
    """
    return constrained_decode_batch(log_probs[None], [log_probs.shape[0]], tags)[0]


def constrained_decode_batch(log_probs, lengths, tags):
    """constrained_decode for B sentences at once: padded log-probabilities (B, n, K), true lengths -> B lists.

    One Viterbi step per position for the whole batch instead of per sentence (dev evaluation decodes
    every sentence every epoch). A sentence that has ended keeps its score and its tag unchanged.
    """
    B, n, K = log_probs.shape
    if n == 0:
        return [[] for _ in range(B)]
    lengths = torch.as_tensor(lengths)
    cannot_start, forbid = _forbidden(tuple(tags))  # (K,), (K_prev, K)
    score = log_probs[:, 0].masked_fill(cannot_start, float("-inf"))  # (B, K)
    back = []
    for i in range(1, n):
        candidates = score[:, :, None].masked_fill(forbid, float("-inf"))  # (B, K_prev, K)
        best, arg = candidates.max(1)  # (B, K): best previous tag for each current tag
        back.append(arg)
        score = torch.where((i < lengths)[:, None], best + log_probs[:, i], score)
    path = torch.empty(B, n, dtype=torch.long)
    current = score.argmax(-1)  # (B,): the last word's tag
    for i in range(n - 1, -1, -1):
        path[:, i] = current
        if i:  # step back only where position i is a real word
            previous = back[i - 1].gather(1, current[:, None]).squeeze(1)
            current = torch.where(i < lengths, previous, current)
    return [row[:length] for row, length in zip(path.tolist(), lengths.tolist())]


@lru_cache(maxsize=16)
def _forbidden(tags):
    """transition_mask as boolean tensors of what is *not* allowed; built once per tag set, not per sentence."""
    start_ok, follow_ok = transition_mask(tags)
    return ~torch.tensor(start_ok), ~torch.tensor(follow_ok)
