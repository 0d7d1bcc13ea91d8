"""A Batch from token ids and a mask alone, for tests that call a model directly."""

from minimtl.batching import Batch


def batch_of(input_ids, attention_mask, shape_ids=None):
    extra = {} if shape_ids is None else {"shape_ids": shape_ids}
    return Batch(list(range(len(input_ids))), input_ids, attention_mask, None, None, None, extra)
