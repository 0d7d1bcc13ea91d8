"""A flag that would change nothing is refused, or made to do what it says (issue 37, class 3)."""

import pytest
import torch

from minimtl import UserError
from minimtl.bert import BertConfig
from minimtl.machinery.run import train
from minimtl.machinery.settings import RunConfig, recipe


def test_label_all_subtokens_with_a_crf_is_refused():
    # The CRF scores each word at its first sub-token: labels on the others would never be read.
    with pytest.raises(UserError, match="--label-all-subtokens changes nothing with --crf"):
        RunConfig(label_all_subtokens=True, crf=True).check()
    RunConfig(label_all_subtokens=True).check()


@pytest.mark.parametrize("schedule, epochs, thawed", [
    ("gradual", 4, False),  # 3 layers: heads, then 1, 2, 3 layers; the embeddings only in epoch 5
    ("gradual", 5, True),
    ("0,1,2", 9, False),  # never "all"
    ("0,all", 2, True),
])
def test_word_shapes_in_embeddings_that_a_schedule_never_thaws_are_refused(schedule, epochs, thawed):
    cfg = RunConfig(word_shape=True, unfreeze_schedule=schedule, epochs=epochs)

    def plan():
        return recipe(cfg, BertConfig(num_hidden_layers=3), "cls", 2, 3, torch.device("cpu"))
    if thawed:
        assert plan().word_shapes == "embeddings"
    else:
        with pytest.raises(UserError, match=f"--unfreeze-schedule {schedule} keeps frozen for all {epochs} epochs"):
            plan()


def test_freeze_all_prints_the_scores_it_says_it_computes(tiny_data, tiny_weights, tmp_path):
    lines = []
    cfg = RunConfig(data=[str(tiny_data)], weights=str(tiny_weights), out=str(tmp_path / "out"), freeze=["all"])
    results = train(cfg, log=lines.append)
    dev = next(line for line in lines if line.startswith("dev (untrained heads): "))
    assert f"acc {100 * results['dev']['label_accuracy']:.2f}" in dev and "F1 " in dev
    assert any(line.startswith("test (untrained heads): ") for line in lines)
