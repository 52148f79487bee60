"""Zero-shot classification with prompt ensembles (CLIP/ALIGN protocol).

Each class embedding is the mean of the L2-normalised text embeddings of the class name in every
template, re-normalised (ALIGN §5.2 uses CLIP's 80 ImageNet templates; ensembling added ~2.9 points
over a single prompt). An image is classified by cosine similarity to the class embeddings.
"""

from __future__ import annotations

import numpy as np

from align_tf import prompts
from align_tf.evaluation.registry import check_int, register_evaluator
from align_tf.prompts import check_templates

TOPK = (1, 5)  # the classification evaluators' k's


def _normalize(x, axis=-1):
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


def class_embeddings(embed_text, classnames, templates, max_texts_per_call: int = 8192) -> np.ndarray:
    """Prompt-ensembled class embeddings.

    Args:
      embed_text: ``embed_text(list[str]) -> (N, D)`` text embeddings (need not be normalised).
      classnames: class names in label order.
      templates: prompt templates, each with one ``"{}"`` for the class name.
      max_texts_per_call: classes are embedded in chunks of about this many prompts, so 1000
        classes × 80 templates never sit in memory as one array.

    Returns:
      ``(num_classes, D)`` float32 unit-norm embeddings.
    """
    templates = check_templates(templates)
    per_call = max(1, max_texts_per_call // len(templates))
    out = []
    for start in range(0, len(classnames), per_call):
        names = classnames[start:start + per_call]
        texts = [t.format(name) for name in names for t in templates]
        emb = np.asarray(embed_text(texts), np.float32).reshape(len(names), len(templates), -1)
        out.append(_normalize(_normalize(emb).mean(axis=1)))
    return np.concatenate(out).astype(np.float32)


def label_ranks(scores, labels) -> np.ndarray:
    """0-based rank of each row's true label among the columns of ``scores``.

    Ties are broken by index (the lower class index ranks first), as a stable descending sort.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels, np.int64)
    true = scores[np.arange(len(scores)), labels][:, None]
    lower = np.arange(scores.shape[1])[None, :] < labels[:, None]
    return (scores > true).sum(axis=1) + ((scores == true) & lower).sum(axis=1)


def topk_accuracy(image_embeddings, class_emb, labels, topk=(1, 5), block_size: int = 4096) -> dict:
    """Top-k accuracy (in [0, 1]) of nearest class embeddings by cosine similarity.

    Scored ``block_size`` images at a time; ties broken by lower class index.
    """
    image_embeddings = np.asarray(image_embeddings, np.float32)
    class_emb = np.asarray(class_emb, np.float32)
    labels = np.asarray(labels, np.int64)
    ranks = np.concatenate([
        label_ranks(image_embeddings[s:s + block_size] @ class_emb.T, labels[s:s + block_size])
        for s in range(0, len(labels), block_size)]) if len(labels) else np.zeros(0, np.int64)
    return {f"top{k}": float(np.mean(ranks < k)) for k in topk if k <= class_emb.shape[0]}


@register_evaluator("zeroshot")
class ZeroShotEvaluator:
    """Named evaluator: zero-shot top-k accuracy on a labelled image set with prompt ensembling.

    Args:
      data: a ``ClassificationData`` (images, labels and class names).
      templates: prompt templates (see ``align_tf.prompts.get_templates``).
      topk: the k values.
      groups: optional ``{name: label ids}``; adds ``{name}_top{k}`` over the images whose label
        is in the group (e.g. the synthetic set's held-out colour/shape pairs).

    Config entry (``type: zeroshot``): ``defaults`` below, on the source's test split; the
    source's label groups (synthetic: held-out and seen pairs) are reported too. With
    ``rerank_k > 0`` (ALBEF) it is ``RerankZeroShotEvaluator``.
    """

    name = "zeroshot"
    needs = "classification"
    defaults = {
        "templates": "auto",  # prompts (align_tf.prompts); auto: synthetic's own for synthetic, else clip80
        "rerank_k": 0,        # ALBEF: re-rank each image's ITC top-K classes with the ITM head
    }

    @classmethod
    def validate(cls, entry, where: str) -> None:
        check_int(entry.rerank_k, f"{where}.rerank_k", 0)
        try:
            prompts.get_templates(entry.templates)
        except ValueError as e:
            raise ValueError(f"{where}.templates: {e}") from None

    @classmethod
    def from_config(cls, entry, data):
        test = data.classification(entry, train=False)
        templates = prompts.get_templates(entry.templates, data.source.prompt_name)
        if entry.rerank_k:
            return RerankZeroShotEvaluator(test, templates, TOPK, entry.rerank_k,
                                           data.source.groups())
        return cls(test, templates, TOPK, data.source.groups())

    def __init__(self, data, templates, topk=(1, 5), groups=None):
        self.data, self.templates, self.topk = data, tuple(templates), tuple(topk)
        self.groups = dict(groups or {})

    def run(self, encoder) -> dict:
        """``encoder``: an ``align_tf.evaluation.embed.Encoder``. Returns a flat dict of floats."""
        class_emb = class_embeddings(encoder.embed_texts, list(self.data.classnames), self.templates)
        image_emb, labels = self.data.embed_images(encoder)
        out = topk_accuracy(image_emb, class_emb, labels, self.topk)
        for group, ids in self.groups.items():
            mask = np.isin(labels, np.asarray(list(ids)))
            for key, value in topk_accuracy(image_emb[mask], class_emb, labels[mask], self.topk).items():
                out[f"{group}_{key}"] = value
        out["num_examples"] = float(len(labels))
        out["num_classes"] = float(len(self.data.classnames))
        out["num_templates"] = float(len(self.templates))
        return out


class RerankZeroShotEvaluator:
    """Zero-shot top-k with ITC (prompt-ensembled, the same keys as ``zeroshot``) and with each
    image's ITC top ``rerank_k`` classes re-ranked by ITM (``rerank_`` keys). A class's ITM score is
    the mean ITM score (match logit by default) of the image with the class name in every
    template.

    Args:
      data: a ``ClassificationData``.
      templates: prompt templates.
      topk: the k values.
      rerank_k: classes per image re-scored by ITM.
      groups: optional ``{name: label ids}`` as for ``ZeroShotEvaluator``.
      match_score: what ITM ranks by, "logit" (ALBEF) or "probability" (``rerank.MatchScorer``).
    """

    name = "zeroshot"

    def __init__(self, data, templates, topk=(1, 5), rerank_k: int = 5, groups=None,
                 match_score: str = "logit"):
        self.data, self.templates, self.topk = data, tuple(templates), tuple(topk)
        self.rerank_k, self.groups = rerank_k, dict(groups or {})
        from align_tf.evaluation import rerank  # TensorFlow: only for an ALBEF evaluation
        self.match_score = rerank.check_match_score(match_score)

    def run(self, encoder) -> dict:
        from align_tf.evaluation import rerank
        scorer = rerank.MatchScorer(encoder, self.match_score)
        classnames = list(self.data.classnames)
        class_emb = class_embeddings(scorer.embed_texts, classnames, self.templates)
        image_emb, extras = scorer.embed_image_dataset(self.data.make_dataset(scorer),
                                                       keys=("label",))
        labels = extras["label"].astype(np.int64)
        image_tokens = scorer.take_image_tokens()
        prompts = [t.format(name) for name in classnames for t in self.templates]
        _, states, masks = scorer.text_features(prompts)
        num_templates = len(self.templates)
        states = states.reshape(len(classnames), num_templates, *states.shape[1:])
        masks = masks.reshape(len(classnames), num_templates, -1)
        sim = image_emb @ class_emb.T

        def scores(q, c):
            t = num_templates
            match = scorer.match(np.repeat(image_tokens[q], t, axis=0),
                                 states[c].reshape(-1, *states.shape[2:]),
                                 masks[c].reshape(-1, masks.shape[-1]))
            return match.reshape(-1, t).mean(axis=1)

        itc_ranks = label_ranks(sim, labels)
        positives = labels[:, None] == np.arange(len(classnames))[None, :]
        ranks = rerank.rerank_ranks(sim, positives, self.rerank_k, scores)
        out = {}
        for prefix, r in (("", itc_ranks), ("rerank_", ranks)):
            groups = [("", np.ones(len(labels), bool))] + [
                (f"{g}_", np.isin(labels, np.asarray(list(ids)))) for g, ids in self.groups.items()]
            for group, mask in groups:
                for k in self.topk:
                    if k <= len(classnames):
                        out[f"{prefix}{group}top{k}"] = float(np.mean(r[mask] < k))
        out.update(rerank_k=float(self.rerank_k), num_examples=float(len(labels)),
                   num_classes=float(len(classnames)), num_templates=float(num_templates))
        return out
