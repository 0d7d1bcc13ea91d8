"""The BIO tag scheme: what a valid tag is, and how a tag sequence becomes entity chunks.

Chunking follows seqeval's default (conlleval-compatible) mode, because that is how every published
NER/slot-filling number is computed: an `I-X` that does not continue an entity of type X (it follows `O`,
the start of the sentence, or an entity of another type) *starts* a new entity instead of being dropped.
"""


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


def opened_by_b(tags):
    """The same chunks with each one opened by `B-X`: every `I-X` that starts an entity (see `chunks`) becomes
    `B-X`. IOB1 data open all their entities so, and BIO files often hold a few (CoNLL-2003's train split: 267);
    a CRF, which forbids `O -> I-X`, and a tagger that should learn one way to open an entity both need them
    rewritten, and the chunks, so every metric, stay the same."""
    out, before = [], ""  # the entity type of the previous tag: "" at the sentence start and after O
    for tag in tags:
        prefix, kind = split_tag(tag)
        out.append(f"B-{kind}" if prefix == "I" and kind != before else tag)
        before = kind
    return tuple(out)


def transition_mask(tags):
    """(start_ok (K,), follow_ok (K, K)): which tags may open a sentence, and which may follow which.

    In valid BIO, `I-X` only continues an entity of type X: it may follow `B-X` or `I-X`, nothing else.
    """
    parts = [split_tag(t) for t in tags]
    start_ok = [prefix != "I" for prefix, _ in parts]
    follow_ok = [[prefix != "I" or (prev_prefix != "O" and prev_kind == kind)
                  for prefix, kind in parts] for prev_prefix, prev_kind in parts]
    return start_ok, follow_ok
