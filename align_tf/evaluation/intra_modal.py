"""Retrieval with several positives per query, within a modality or across (image→image,
text→text; CxC's extended i2t/t2i), and the synthetic set's intra-modal retrieval.

A query's rank is the 0-based rank of its best-ranked positive among the candidates, ties broken
by index as in ``retrieval.py`` (a stable descending sort: ``#{scoring higher} + #{lower-indexed
scoring the same}``). With ``exclude_self`` (intra-modal), query ``q`` is not a candidate of
itself: it is neither counted in the ranks nor a positive. A query without any positive is
dropped: R@K is over the queries kept, and the dropped ones are counted.

On the synthetic set (``type: intramodal``, ``dataset: synthetic``): image→image over the
zero-shot test images (``eval.synthetic_examples_per_class`` renders of each (colour, shape)
class; an image's positives are the other images of its class), and text→text over clean captions
of every class (``captions_per_class`` each, ``data/synthetic_similarity.py``; positives: the other
captions of its class).
"""

from __future__ import annotations

import numpy as np

from align_tf.evaluation.registry import check_int, register_evaluator
from align_tf.evaluation.retrieval import parse_ks


def positive_ranks(queries, candidates, positives, exclude_self: bool = False,
                   block_size: int = 512) -> np.ndarray:
    """0-based rank of each query's best-ranked positive (module docstring); -1: no positive.

    Args:
      queries: ``(Q, D)``; candidates: ``(C, D)`` (with ``exclude_self``, the same set: Q == C).
      positives: per query, an int array of candidate indices.
      exclude_self: query ``q`` is not a candidate of itself.
      block_size: queries scored at once (memory ``block_size × C`` floats).
    """
    queries = np.asarray(queries, np.float32)
    candidates = np.asarray(candidates, np.float32)
    index = np.arange(len(candidates))
    ranks = np.full(len(queries), -1, np.int64)
    for start in range(0, len(queries), block_size):
        stop = min(start + block_size, len(queries))
        scores = queries[start:stop] @ candidates.T
        mask = np.zeros(scores.shape, bool)
        for row, q in enumerate(range(start, stop)):
            mask[row, np.asarray(positives[q], np.int64)] = True
        if exclude_self:
            rows = np.arange(stop - start)
            mask[rows, rows + start] = False
            scores[rows, rows + start] = -np.inf  # below every real candidate: never counted
        has = mask.any(axis=1)
        best = np.where(mask, scores, -np.inf).max(axis=1, keepdims=True)
        first = np.argmax(mask & (scores == best), axis=1)[:, None]
        rank = (scores > best).sum(axis=1) + ((scores == best) & (index[None] < first)).sum(axis=1)
        ranks[start:stop] = np.where(has, rank, -1)
    return ranks


def recalls(name: str, ranks, ks) -> dict:
    """``{name}_R@K`` over the queries with a positive (rank >= 0), plus ``num_{name}_queries``
    (kept) and ``num_{name}_dropped`` (no positive)."""
    ranks = np.asarray(ranks)
    kept = ranks[ranks >= 0]
    out = {f"{name}_R@{k}": float(np.mean(kept < k)) if len(kept) else 0.0 for k in ks}
    out[f"num_{name}_queries"] = float(len(kept))
    out[f"num_{name}_dropped"] = float(len(ranks) - len(kept))
    return out


def same_label_positives(labels) -> list:
    """Per item, the indices of the items with its label (itself included; ``exclude_self``
    removes it)."""
    labels = np.asarray(labels)
    groups = {label: np.flatnonzero(labels == label) for label in np.unique(labels)}
    return [groups[label] for label in labels]


def synthetic_captions(encoder, per_class: int, seed: int) -> tuple:
    """``(caption embeddings, class labels)`` of the synthetic similarity module's clean captions,
    once per ``fixed_weights`` block (t2t and SITS/STS share them)."""
    from align_tf.data import synthetic_similarity

    def embed():
        captions, labels = synthetic_similarity.class_captions(per_class, seed)
        return encoder.embed_texts(captions), labels
    return encoder.memoize(("synthetic_captions", per_class, seed), embed)


def check_ks_and(entry, where: str, field: str, minimum: int) -> None:
    """One-line ``ValueError`` naming the field: ``recall_ks``, then the integer ``field``."""
    parse_ks(entry.recall_ks, f"{where}.recall_ks")
    check_int(entry[field], f"{where}.{field}", minimum)


def is_synthetic(source) -> bool:
    return getattr(source, "name", "") == "synthetic"


@register_evaluator("intramodal")
class IntraModalEvaluator:
    """image→image and text→text R@K on the synthetic set (module docstring)."""

    needs = "classification"  # the labelled test images, plus captions it makes
    defaults = {"recall_ks": "1,5,10",
                "captions_per_class": 8}  # synthetic text→text: clean captions per class

    @classmethod
    def accepts(cls, source, kinds) -> bool:
        return is_synthetic(source)

    @classmethod
    def validate(cls, entry, where: str) -> None:
        check_ks_and(entry, where, "captions_per_class", 2)

    @classmethod
    def from_config(cls, entry, data):
        return cls(data.classification(entry, False), parse_ks(entry.recall_ks),
                   entry.captions_per_class, entry.synthetic_seed + 3)

    def __init__(self, images, ks=(1, 5, 10), captions_per_class: int = 8, seed: int = 0):
        self.data, self.ks = images, tuple(ks)
        self.captions_per_class, self.seed = captions_per_class, seed

    def run(self, encoder) -> dict:
        image_emb, labels = self.data.embed_images(encoder)
        text_emb, text_labels = synthetic_captions(encoder, self.captions_per_class, self.seed)
        out = recalls("i2i", positive_ranks(image_emb, image_emb, same_label_positives(labels),
                                            exclude_self=True), self.ks)
        out.update(recalls("t2t", positive_ranks(text_emb, text_emb,
                                                 same_label_positives(text_labels),
                                                 exclude_self=True), self.ks))
        return out
