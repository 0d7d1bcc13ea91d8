"""The shipped demo set: what train.py uses with no --data. It is generated, so it must regenerate."""

import json

from conftest import ROOT
from minimtl.bio import chunks
from minimtl.machinery.settings import RunConfig
from minimtl.machinery.checkpoint import load_predictor
from minimtl.machinery.data import load_data
from minimtl.machinery.run import train
from demo import make_demo

DEMO = ROOT / "minimtl" / "demo"


def test_demo_set_has_the_promised_shape():
    splits = load_data(DEMO)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (1200, 150, 150)
    assert len({ex.label for ex in splits.train}) >= 5
    types = {kind for ex in splits.train for kind, _, _ in chunks(ex.tags)}
    assert types == {"PER", "LOC", "ORG", "MISC"}
    train_sentences = {ex.words for ex in splits.train}
    assert not train_sentences & {ex.words for ex in splits.dev + splits.test}


def test_demo_files_are_exactly_what_the_generator_writes():
    for split, examples in make_demo.generate().items():
        written = (DEMO / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        assert written == [json.dumps(ex, ensure_ascii=False, separators=(",", ":")) for ex, _ in examples]


def test_demo_avoids_the_readme_example_names():
    text = " ".join((DEMO / f"{s}.jsonl").read_text(encoding="utf-8") for s in ("train", "dev", "test"))
    for name in ("Biden", "Musk", "Tesla", "Cybertruck", "Fetch"):
        assert name not in text


def test_the_frozen_demo_model_tags_the_readme_example(tmp_path, checkpoint_dir):
    """`python train.py --freeze backbone`, then `python infer.py "Alice went to Paris last summer."`: the old
    linear probe tagged Alice as LOC; the frozen recipe must see a person."""
    train(RunConfig(freeze=["backbone"], out=str(tmp_path / "demo")), log=lambda _: None)
    prediction = load_predictor(tmp_path / "demo").predictions(["Alice went to Paris last summer."])[0]
    assert [(span.type, span.text) for span in prediction.entities] == [("PER", "Alice"), ("LOC", "Paris")]
