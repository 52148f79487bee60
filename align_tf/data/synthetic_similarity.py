"""A synthetic similarity set in CxC's shape (SITS / STS / SIS): rated caption–image,
caption–caption and image–image pairs over the synthetic (colour, shape) classes, with a known
ground truth, so the correlation metrics mean something on the tiny default model.

Ground truth of a pair of items of classes ``a`` and ``b`` (CxC's 0–5 scale): ``5`` for the same
class, ``2.5`` when only the colour is shared, ``1.5`` when only the shape is, ``0`` otherwise;
each rating adds Gaussian rater noise (σ = ``NOISE``), clipped to [0, 5]. Pairs are drawn
stratified: each relation (same class, colour only, shape only, neither) a quarter of the pairs,
so the ranking has something to order at every level (uniform pairs would be 64% "neither").

The images are the evaluation's zero-shot test renders (their labels are given); the captions are
clean (``noise=0``, ``partial=0``) captions of every class in varied wording (``class_captions``).
"""

from __future__ import annotations

import numpy as np

from align_tf.data import synthetic

SAME, COLOUR, SHAPE, NEITHER = 5.0, 2.5, 1.5, 0.0
NOISE = 0.5
TASKS = ("sits", "sts", "sis")


def class_captions(per_class: int, seed: int) -> tuple:
    """``(captions, labels)``: ``per_class`` clean captions of each class, in class order."""
    rng = np.random.default_rng(seed)
    captions, labels = [], []
    for label, pair in enumerate(synthetic.CLASSES):
        for _ in range(per_class):
            _, frac, bg = synthetic.render(pair, 8, rng)  # the wording's size and background
            captions.append(synthetic.caption(pair, frac, bg, rng, noise=0.0, partial=0.0))
            labels.append(label)
    return captions, np.asarray(labels, np.int64)


def truth(label_a, label_b) -> np.ndarray:
    """The ground-truth score of pairs of class labels (module docstring)."""
    colours = np.array([sorted(synthetic.COLOURS).index(c) for c, _ in synthetic.CLASSES])
    shapes = np.array([synthetic.SHAPES.index(s) for _, s in synthetic.CLASSES])
    a, b = np.asarray(label_a), np.asarray(label_b)
    colour, shape = colours[a] == colours[b], shapes[a] == shapes[b]
    return np.where(colour & shape, SAME, np.where(colour, COLOUR, np.where(shape, SHAPE,
                                                                            NEITHER)))


def draw_pairs(labels_a, labels_b, num_pairs: int, rng, same_set: bool) -> tuple:
    """``(first, second)`` indices into the two item sets, stratified by relation (same class,
    colour only, shape only, neither in turn; a relation no pair has is left out); with
    ``same_set`` an item is never paired with itself."""
    labels_a, labels_b = np.asarray(labels_a), np.asarray(labels_b)
    levels = -np.array([SAME, COLOUR, SHAPE, NEITHER])
    relation = np.searchsorted(levels, -truth(np.repeat(labels_a, len(labels_b)),
                                              np.tile(labels_b, len(labels_a))))
    relation = relation.reshape(len(labels_a), len(labels_b))
    if same_set:
        np.fill_diagonal(relation, -1)
    pairs = [np.nonzero(relation == r) for r in range(4)]
    pairs = [p for p in pairs if len(p[0])]
    first, second = [], []
    for n in range(num_pairs):
        rows, cols = pairs[n % len(pairs)]
        pick = int(rng.integers(len(rows)))
        first.append(rows[pick])
        second.append(cols[pick])
    return np.asarray(first, np.int64), np.asarray(second, np.int64)


def rated_pairs(image_labels, caption_labels, num_pairs: int, seed: int) -> dict:
    """``{"sits": (caption, image, score), "sts": (caption, caption, score), "sis": (image, image,
    score)}``: index arrays into the captions / images and noisy ratings (module docstring)."""
    rng = np.random.default_rng(seed)
    sides = {"sits": (caption_labels, image_labels, False),
             "sts": (caption_labels, caption_labels, True),
             "sis": (image_labels, image_labels, True)}
    out = {}
    for task in TASKS:
        labels_a, labels_b, same_set = sides[task]
        first, second = draw_pairs(labels_a, labels_b, num_pairs, rng, same_set)
        score = truth(np.asarray(labels_a)[first], np.asarray(labels_b)[second])
        score = np.clip(score + rng.normal(0.0, NOISE, len(score)), 0.0, 5.0)
        out[task] = (first, second, score)
    return out
