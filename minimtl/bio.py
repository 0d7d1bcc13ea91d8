"""The BIO tag scheme: what a valid tag is, how a tag sequence becomes entity chunks, and the best valid path.

Chunking follows seqeval's default (conlleval-compatible) mode, because that is how every published
NER/slot-filling number is computed: an `I-X` that does not continue an entity of type X (it follows `O`,
the start of the sentence, or an entity of another type) *starts* a new entity instead of being dropped.
"""

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


@torch.no_grad()
def viterbi(emissions, lengths, start, transitions, end):
    """The best path per sentence under s(y) = start[y_0] + sum_i e_i[y_i] + sum_{i>0} T[y_{i-1}, y_i] + end[y_n-1]:
    emissions (B, W, K), word counts (B,), start (K,), transitions (K_prev, K), end (K,) -> B lists of tag ids.

    Dynamic programming over words: the best score of a path ending in tag j at word i is
    e_i[j] + max_k (best at word i-1 ending in k + T[k, j]); back-pointers recover the path. One step per word
    for the whole batch; a sentence that has ended keeps its score and, on the way back, its tag."""
    B, W, K = emissions.shape
    lengths = torch.as_tensor(lengths, device=emissions.device)
    if W == 0:
        return [[] for _ in range(B)]
    score = start + emissions[:, 0]  # (B, K): best path score ending in each tag
    back = []
    for i in range(1, W):
        best, arg = (score[:, :, None] + transitions).max(1)  # (B, K_prev, K) -> (B, K): best previous tag
        back.append(arg)
        score = torch.where((i < lengths)[:, None], best + emissions[:, i], score)
    current = (score + end).argmax(1)  # (B,): each sentence's last tag
    path = torch.empty(B, W, dtype=torch.long, device=emissions.device)
    for i in range(W - 1, -1, -1):
        path[:, i] = current
        if i:  # follow the back-pointer only inside the sentence; past its end the tag stays put
            previous = back[i - 1].gather(1, current[:, None]).squeeze(1)
            current = torch.where(i < lengths, previous, current)
    return [row[:n] for row, n in zip(path.tolist(), lengths.tolist())]


def best_valid_paths(log_probs, lengths, start_ok, follow_ok):
    """The most probable valid BIO sequence per sentence: per-word log-probabilities (B, W, K), word counts,
    and the tags' `transition_mask` as tensors -> B lists of tag ids. Viterbi with fixed scores: 0 where BIO
    allows a step, -inf where it forbids one."""
    start, transitions = (torch.zeros_like(ok, dtype=log_probs.dtype).masked_fill(~ok, -torch.inf)
                          for ok in (start_ok, follow_ok))
    return viterbi(log_probs, lengths, start, transitions, torch.zeros_like(start))
