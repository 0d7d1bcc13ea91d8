"""Distillation: an ensemble of finished runs (the teachers) teaches one new model (the student) what it believes.

An ensemble of a few seeds is better than any one of them, and costs their sum at every prediction. Knowledge
distillation (Hinton et al. 2015) trains one model to match the ensemble's *probabilities*, not only the gold
labels: a teacher that gives "Jordan" 0.7 B-PER and 0.3 B-LOC says something a one-hot label does not, and
says it on text that has no gold labels at all. So each training sentence of every source gets the teachers'
mean distribution from both heads: its topic, and each word's tag. On CoNLL that adds to the gold tags; on
AG News, which has no tags, it is the only tag signal, and on CoNLL the topic head is taught likewise.

    loss = the run's multi-task loss + WEIGHT * T^2 * (KL(teachers || student) per sentence, averaged, for the
           sentence head + the same per word, averaged over the words, for the token head)

both distributions softened by the temperature T (softmax(z / T)): at T = 1 a confident teacher's 0.999 is a
one-hot label again, and the T^2 keeps the gradient's scale as T changes (Hinton et al., section 2).

Where it plugs in: the run's step loss (machinery/steps.step_loss), as an added term. The teachers run in
eval mode, so what they say of a sentence never changes: it is computed the first time the sentence is met and
kept (a few numbers per word), so that every later epoch reads it back for free, and a resumed run computes
the same numbers again. On a frozen backbone a teacher that froze the same pretrained encoder reads the
student's feature cache (features.py): its heads alone run.

The student's settings must match its teachers': the same tags and labels in the same order, the same
pretrained weights (so the same tokenizer), the same document context and word shapes. A CRF gives no
per-word distribution to match, so neither side may have one.
"""

from pathlib import Path

import torch
import torch.nn.functional as F

from ..guards.errors import UserError
from ..model import at_words
from .features import CachedModel

TEMPERATURE = 2.0  # Hinton et al.'s range (2-4) for teachers as confident as ours on their training text
WEIGHT = 1.0  # the distillation term weighs as much as the gold labels


class Teachers:
    """Finished runs (model in eval mode, checkpoint meta) whose mean predictions a student learns."""

    def __init__(self, runs, student_meta):
        """`runs`: {run directory: (model, meta) as load_checkpoint reads them}; `student_meta`: the student's
        labels, tags, recipe, word_shapes, context and weights_sha256 (run.meta's keys). Refuses teachers that
        do not fit it."""
        if student_meta["recipe"]["heads"]["crf"]:
            raise UserError("--distill matches each word's tag distribution, which a CRF does not give: drop --crf")
        for where, (model, meta) in runs.items():
            if Path(where).resolve() == Path(student_meta["train_args"]["out"]).resolve():
                raise UserError(f"--distill {where} is this run's --out: a run cannot teach the run that replaces it")
            for key in ("labels", "tags", "context", "weights_sha256"):
                if meta.get(key) != student_meta[key]:
                    raise UserError(f"--distill {where}: the teacher's {key.replace('_', ' ')} differ from this "
                                    f"run's ({meta.get(key)!r} against {student_meta[key]!r})")
            if model.config.crf:
                raise UserError(f"--distill {where}: the teacher has a CRF, which gives no per-word tag distribution")
            if meta.get("word_shapes") and not student_meta["word_shapes"]:
                raise UserError(f"--distill {where}: the teacher reads word shapes; give this run --word-shape too")
        self.runs = list(runs.values())
        self.known = {}  # (source, sentence index) -> (topic probabilities (C,), tag probabilities (words, K))

    def describe(self):
        """The recipe block's line for the log (settings.Recipe.describe)."""
        return (f"\n  distillation: the mean of {len(self.runs)} teachers' softened predictions (T = {TEMPERATURE}), "
                "learned on every training sentence by both heads")

    def to(self, device):
        for model, _ in self.runs:
            model.to(device)
        return self

    def loss(self, out, batch, net):
        """The distillation term of one training micro-batch: `out`, the student's Outputs on it; `net`, what
        computed them (the model, or the model on its feature cache)."""
        topics, tags = self.targets(batch, net)
        terms = []
        if topics is not None:  # (B, C)
            terms.append(softened_kl(out.cls_logits, topics).mean())
        emissions, real = at_words(out.ner_logits, batch.words) if tags is not None else (None, None)
        if tags is not None and real.any():  # (B, W, K), (B, W)
            terms.append(softened_kl(emissions, tags)[real].mean())
        return WEIGHT * TEMPERATURE**2 * sum(terms, torch.zeros((), device=batch.input_ids.device))

    def targets(self, batch, net):
        """The teachers' mean softened distributions for the batch's sentences: topics (B, C) and word tags
        (B, W, K), zeros past each sentence's last word; None for a head the models lack."""
        keys = [(batch.source, i) for i in batch.index]
        if any(k not in self.known for k in keys):
            self.known.update(zip(keys, self.ask(batch, net)))
        topics, tags = zip(*(self.known[k] for k in keys))
        W = batch.words.shape[1]
        return (None if topics[0] is None else torch.stack(topics),
                None if tags[0] is None else torch.stack([F.pad(t, (0, 0, 0, W - len(t))) for t in tags]))

    @torch.no_grad()
    def ask(self, batch, net):
        """Each sentence of `batch`: (its mean topic distribution (C,), its words' mean tag distributions
        (words, K)), None for a head the models lack."""
        inner = getattr(net, "module", net)  # under torchrun, the net is wrapped in DistributedDataParallel
        topics, tags = [], []
        with torch.autocast(batch.input_ids.device.type, enabled=False):  # the same numbers on every CPU
            for model, meta in self.runs:
                # A teacher that froze the same pretrained encoder (weights_sha256, checked) reads the same states.
                frozen = meta.get("recipe", {}).get("kind") == "frozen backbone"
                same_features = frozen and isinstance(inner, CachedModel) and model.layers == inner.model.layers
                out = (CachedModel(model, inner.cache) if same_features else model)(batch)
                if out.cls_logits is not None:
                    topics.append(F.softmax(out.cls_logits.float() / TEMPERATURE, -1))  # (B, C)
                if out.ner_logits is not None:
                    tags.append(F.softmax(at_words(out.ner_logits.float(), batch.words)[0] / TEMPERATURE, -1))
        topics = torch.stack(topics).mean(0) if topics else None  # (B, C)
        tags = torch.stack(tags).mean(0) if tags else None  # (B, W, K)
        lengths = (batch.words >= 0).sum(1).tolist()
        return [(None if topics is None else topics[b], None if tags is None else tags[b, :lengths[b]])
                for b in range(len(batch.index))]


def softened_kl(logits, probabilities):
    """KL(teachers || student) at temperature T, per row: logits (..., K), the teachers' probabilities (..., K).
    The cross-entropy minus the teachers' own entropy, a constant, so that a student equal to them scores 0."""
    log_q = F.log_softmax(logits.float() / TEMPERATURE, -1)
    return (probabilities * (probabilities.clamp(min=1e-12).log() - log_q)).sum(-1)
