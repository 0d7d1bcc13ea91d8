"""Every sub-token labelled, as transformers' run_ner labels them: the other rule for where a word's tag goes.

The lesson puts each word's tag on its first sub-token only (tokenization.labels). Here every sub-token of a
word carries a tag, the pieces of a `B-X` word after its first as `I-X`; if `I-X` has no id they are ignored
rather than labelled `B-X`, which would teach the model a second entity start. Handed to
batching.encode_split as its `label` rule (--label-all-subtokens); predictions are still read at first
sub-tokens.
"""

from ..model import IGNORE_INDEX
from ..tokenization import labels


def all_subtoken_labels(enc, tags, tag_to_id):
    """Label ids, one per position of `enc`: every sub-token of a word, continuations of `B-X` as `I-X`."""
    labels(enc, tags, tag_to_id)  # the same checks of the tags against the encoding
    out = [IGNORE_INDEX] * len(enc.input_ids)
    previous = None
    for position, word in enumerate(enc.word_ids):
        if word is None:
            continue
        tag = tags[word]
        if word == previous and tag.startswith("B-"):
            tag = "I-" + tag[2:]
        out[position] = tag_to_id.get(tag, IGNORE_INDEX)
        previous = word
    return out
