"""The tag schemes data comes in, all read as BIO, which training, decoding and the metrics use.

* IOB1 (the original CoNLL-2003 release): an entity begins with I-, and B- only separates two adjacent
  entities of one type. Recognised, and converted (`as_bio`), as are the stray `I-X` openers of a BIO file.
* BIOES and BILOU: `S-X` / `U-X` a one-word entity, `E-X` / `L-X` an entity's last word (`from_bioes`).

The same entities either way; machinery/data.py says in the log which files were rewritten.
"""

from dataclasses import replace

from ..bio import split_tag

# BIOES (S single, E end) and BILOU (U unit, L last) prefixes, as the BIO prefix that marks the same entity.
AS_BIO = {"S": "B", "U": "B", "E": "I", "L": "I"}


def bio_tag(tag):
    """`tag` as BIO writes it: a BIOES / BILOU prefix replaced by BIO's, anything else as it is."""
    prefix, dash, kind = tag.partition("-")
    return f"{AS_BIO[prefix]}-{kind}" if dash and prefix in AS_BIO else tag


def is_tag(value):
    """Whether `value` is a BIO tag, or a BIOES / BILOU one."""
    try:
        split_tag(bio_tag(value))
    except ValueError:
        return False
    return True


def from_bioes(examples):
    """(examples, how many tags were BIOES / BILOU): S-X and U-X (a one-word entity) written B-X, E-X and L-X
    (an entity's last word) written I-X: the same entities, in BIO."""
    count, out = 0, []
    for ex in examples:
        tags = tuple(map(bio_tag, ex.tags or ()))
        count += sum(a != b for a, b in zip(tags, ex.tags or ()))
        out.append(replace(ex, tags=tags) if ex.tags else ex)
    return (out if count else examples), count


def opened_by_b(tags):
    """The same chunks with each one opened by `B-X`: every `I-X` that starts an entity (see `chunks`) becomes
    `B-X`. IOB1 data open all their entities so, and BIO files often hold a few (CoNLL-2003's train split: 267);
    a tagger that forbids `O -> I-X`, and a tagger that should learn one way to open an entity both need them
    rewritten, and the chunks, so every metric, stay the same."""
    out, before = [], ""  # the entity type of the previous tag: "" at the sentence start and after O
    for tag in tags:
        prefix, kind = split_tag(tag)
        out.append(f"B-{kind}" if prefix == "I" and kind != before else tag)
        before = kind
    return tuple(out)


def as_bio(examples):
    """(examples, IOB1?, openers): every entity opened by `B-X` (`opened_by_b`), whether the file was IOB1,
    and how many of its entities opened with an `I-X` (each rewritten; the chunks do not change).

    In IOB1 a `B-X` only ever follows an `I-X` or `B-X` (it separates two adjacent X entities), and entities
    open with `I-X`. BIO data opens nearly every entity with a `B-X` after `O` or the sentence start, which
    IOB1 never has: one such `B-X` anywhere and the file is BIO with a few stray `I-X` openers. The callers
    log the two cases differently; the rewrite is the same.
    """
    iob1, openers, converted = True, 0, []
    for ex in examples:
        before = ""  # the entity type of the previous tag: "" at the sentence start and after O
        for tag in ex.tags or ():
            prefix, kind = split_tag(tag)
            if kind != before:
                iob1 &= prefix != "B"
                openers += prefix == "I"
            before = kind
        converted.append(replace(ex, tags=opened_by_b(ex.tags)) if ex.tags else ex)
    if not openers:
        return examples, False, 0
    return converted, iob1, openers
