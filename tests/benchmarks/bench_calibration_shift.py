"""Why a temperature fitted on CoNLL-2003 dev leaves test's entities over-confident: the test split's entities
are less often right at the same confidence, and part of that is that fewer of them were seen in training.

    python tests/benchmarks/bench_calibration_shift.py \\
        --run NAME CHECKPOINT ../shared/data/conll2003 ../shared/data/ag_news [--run ...]

Per run, on the data set with tags: each predicted entity of dev and test, whether it is gold, whether its exact
text was a gold entity of the training split ("seen"), and its type. Then temperatures fitted on dev by
`calibration.fit_temperature` (the entity log loss training minimises) for each group of entities, one T per
group, and the test ECE (15 bins) they give:

    one          one T for every entity (what training fits)
    seen         one T for entities seen in training, one for unseen ones
    type         one T per entity type
    type+seen    one T per (type, seen)

If the shift from dev to test were only a different mix of seen and unseen names (or of types), the grouped
temperatures would carry over to test. The checkpoints are only read. Writes
tests/benchmarks/results/calibration_shift.json.
"""

import argparse
from pathlib import Path

import torch

from bench_calibration import sources_of
from common import setup, write_results
from minimtl.bio import chunks
from minimtl.extensions.calibration import entities, collect, decoded_batches, expected_calibration_error, fit_temperature, \
    judged_entities, log_loss
from minimtl.evaluation import head_outputs
from minimtl.machinery.checkpoint import load_with_tokenizer

GROUPS = {"one": lambda e: "all", "seen": lambda e: "seen" if e["seen"] else "unseen",
          "type": lambda e: e["type"], "type+seen": lambda e: f"{e['type']} {'seen' if e['seen'] else 'unseen'}"}


class Split:
    """A split's predicted entities (type, seen, gold) and their probabilities under any T (computed once per T)."""

    def __init__(self, model, source, split, seen):
        self.head = model.ner_head
        logits = collect(source, split, head_outputs(model, source, split))
        self.decoded = decoded_batches(self.head, logits)
        examples, rows = getattr(source.splits, split), iter(logits.order)
        self.entities = []
        for emissions, lengths, paths, gold in self.decoded:
            for found, gold_entities in zip(entities(self.head, emissions, lengths, paths), gold):
                words = examples[next(rows)].words
                self.entities += [{"type": kind, "seen": " ".join(words[first:last + 1]) in seen,
                                   "gold": (kind, first, last) in gold_entities} for kind, first, last, _ in found]
        self.cache = {}

    def probabilities(self, t):
        if t not in self.cache:
            self.cache[t] = judged_entities(self.head, self.decoded, t)[0]
        return self.cache[t]


def group_log_loss(split, members, t):
    """The entity log loss training minimises (calibration.log_loss), over the entities `members` only."""
    p = split.probabilities(t)
    return log_loss([p[i] for i in members], [split.entities[i]["gold"] for i in members])


def run(name, checkpoint, data):
    model, meta, aligner = load_with_tokenizer(checkpoint)
    source = next(s for s in sources_of(checkpoint, data, aligner, meta, model) if s.splits.has_tags)
    seen = {" ".join(ex.words[first:last + 1]) for ex in source.splits.train for _, first, last in chunks(ex.tags)}
    dev, test = Split(model, source, "dev", seen), Split(model, source, "test", seen)
    row = {"checkpoint": str(checkpoint), "data": str(source.name), "splits": {}}
    for label, split in (("dev", dev), ("test", test)):
        seen_ones = [e for e in split.entities if e["seen"]]
        unseen = [e for e in split.entities if not e["seen"]]
        row["splits"][label] = {"entities": len(split.entities), "seen_share": len(seen_ones) / len(split.entities),
                                "precision_seen": sum(e["gold"] for e in seen_ones) / len(seen_ones),
                                "precision_unseen": sum(e["gold"] for e in unseen) / len(unseen)}
    row["fits"] = {}
    for fit, group_of in GROUPS.items():
        members = {}
        for i, e in enumerate(dev.entities):
            members.setdefault(group_of(e), []).append(i)
        temperatures = {g: fit_temperature(lambda t: group_log_loss(dev, idx, t)) for g, idx in sorted(members.items())}
        ece = {}
        for label, split in (("dev", dev), ("test", test)):
            confidences = [split.probabilities(temperatures.get(group_of(e), 1.0))[i]
                           for i, e in enumerate(split.entities)]
            ece[label] = expected_calibration_error(confidences, [e["gold"] for e in split.entities])
        row["fits"][fit] = {"temperatures": temperatures, "dev_ece": ece["dev"], "test_ece": ece["test"]}
        print(f"{name} {fit}: dev ECE {100 * ece['dev']:.2f}%, test ECE {100 * ece['test']:.2f}%  "
              f"T {({g: round(t, 3) for g, t in temperatures.items()})}", flush=True)
    for label, s in row["splits"].items():
        print(f"{name} {label}: {s['entities']} predicted entities, {100 * s['seen_share']:.1f}% seen in training; "
              f"precision {100 * s['precision_seen']:.1f}% seen, {100 * s['precision_unseen']:.1f}% unseen", flush=True)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--run", nargs="+", action="append", required=True, metavar="NAME CHECKPOINT DATA",
                   help="a name, a checkpoint directory and the data folders it was trained on (repeatable)")
    p.set_defaults(quick=False)
    args = p.parse_args()
    setup(args)
    runs = {}
    with torch.no_grad():
        for name, checkpoint, *data in args.run:
            runs[name] = run(name, Path(checkpoint), [Path(d) for d in data])
    write_results("calibration_shift", {"runs": runs}, args)


if __name__ == "__main__":
    main()
