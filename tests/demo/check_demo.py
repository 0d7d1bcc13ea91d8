"""Quick sanity check of the demo data without deep learning: is it learnable, and is it not trivial?

Prints, per split, the topic and entity distributions and the sentence lengths, the share of dev/test
entity mentions whose surface string never appears in train, and three shallow baselines:
  * topics, nearest centroid over bag-of-words (tf-idf, cosine);
  * topics, softmax regression over bag-of-words (numpy, full-batch gradient descent);
  * entities, "memorise the train tag of each word": tag every word with its most frequent train tag.
They should be far above chance (topics: 1/6) but not perfect, which is what a frozen-backbone model
has to improve on. Needs numpy.  Run:  python tests/demo/check_demo.py
"""

import json
from collections import Counter
from pathlib import Path

import numpy as np

from minimtl.bio import chunks

DEMO_DIR = Path(__file__).resolve().parents[2] / "minimtl" / "demo"


def load(split):
    with open(DEMO_DIR / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def mentions(rows):
    return [(kind, " ".join(r["tokens"][a: b + 1])) for r in rows for kind, a, b in chunks(r["tags"])]


def entity_f1(gold_rows, predicted_tags):
    gold = {(i, c) for i, r in enumerate(gold_rows) for c in chunks(r["tags"])}
    pred = {(i, c) for i, tags in enumerate(predicted_tags) for c in chunks(tags)}
    hit = len(gold & pred)
    precision, recall = hit / max(len(pred), 1), hit / max(len(gold), 1)
    return 100 * 2 * precision * recall / max(precision + recall, 1e-9)


def bag_of_words(rows, vocab):
    x = np.zeros((len(rows), len(vocab)))
    for i, r in enumerate(rows):
        for token in r["tokens"]:
            j = vocab.get(token.lower())
            if j is not None:
                x[i, j] += 1
    return x


def main():
    data = {split: load(split) for split in ("train", "dev", "test")}
    train_surfaces = {s for _, s in mentions(data["train"])}
    for split, rows in data.items():
        lengths = [len(r["tokens"]) for r in rows]
        found = mentions(rows)
        print(f"{split}: {len(rows)} sentences, length {min(lengths)}-{max(lengths)} (mean {np.mean(lengths):.1f})")
        print(f"  topics: {dict(sorted(Counter(r['label'] for r in rows).items()))}")
        print(f"  tags:   {dict(sorted(Counter(t for r in rows for t in r['tags']).items()))}")
        print(f"  entity mentions: {dict(sorted(Counter(k for k, _ in found).items()))}, "
              f"{len({s for _, s in found})} distinct surfaces")
        if split != "train":
            unseen = sum(s not in train_surfaces for _, s in found)
            print(f"  surface never in train: {unseen}/{len(found)} = {100 * unseen / len(found):.1f}%")

    labels = sorted({r["label"] for r in data["train"]})
    words = Counter(t.lower() for r in data["train"] for t in r["tokens"])
    vocab = {w: i for i, w in enumerate(sorted(w for w, n in words.items() if n >= 2))}
    x = {s: bag_of_words(rows, vocab) for s, rows in data.items()}
    y = {s: np.array([labels.index(r["label"]) for r in rows]) for s, rows in data.items()}

    idf = np.log(len(data["train"]) / (1 + (x["train"] > 0).sum(0)))

    def tfidf(m):
        v = m * idf
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)

    centroids = np.stack([tfidf(x["train"])[y["train"] == k].mean(0) for k in range(len(labels))])
    w = np.zeros((len(vocab), len(labels)))
    b = np.zeros(len(labels))
    onehot = np.eye(len(labels))[y["train"]]
    for _ in range(300):  # softmax regression, L2 1e-3, full batch
        logits = x["train"] @ w + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        grad = (p - onehot) / len(p)
        w -= 0.5 * (x["train"].T @ grad + 1e-3 * w)
        b -= 0.5 * grad.sum(0)

    word_tag = {}
    for word, tags in _tags_by_word(data["train"]).items():
        word_tag[word] = tags.most_common(1)[0][0]
    print(f"chance topic accuracy: {100 / len(labels):.1f}%")
    for split in ("train", "dev", "test"):
        centroid_acc = 100 * np.mean((tfidf(x[split]) @ centroids.T).argmax(1) == y[split])
        softmax_acc = 100 * np.mean((x[split] @ w + b).argmax(1) == y[split])
        memorised = [_valid([word_tag.get(t.lower(), "O") for t in r["tokens"]]) for r in data[split]]
        print(f"{split}: topic accuracy, nearest centroid {centroid_acc:.1f}%, softmax regression "
              f"{softmax_acc:.1f}%; entity F1 of memorised word tags {entity_f1(data[split], memorised):.1f}")


def _tags_by_word(rows):
    found = {}
    for r in rows:
        for token, tag in zip(r["tokens"], r["tags"]):
            found.setdefault(token.lower(), Counter())[tag] += 1
    return found


def _valid(tags):
    """Repair the memorised tags into valid BIO: an I-X that does not continue an X becomes B-X."""
    out = []
    for tag in tags:
        if tag.startswith("I-") and (not out or out[-1][2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
    return out


if __name__ == "__main__":
    main()
