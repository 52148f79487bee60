"""``synthetic``: the built-in coloured-shapes corpus (``align_tf.data.synthetic``).

Training: its pairs live in memory (the trainer samples them by index, ``sampling.sample_arrays``:
exact O(1) resume), so it has no file stream and needs no vocabulary (one is learned from its
captions). Evaluation: fresh seeded renders (``eval.synthetic_seed``, far from training's
``seed``), so every evaluation of a model sees the same images; the classes are all 30 (colour,
shape) pairs, and retrieval is scored within galleries of one image per class.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from align_tf.data import synthetic
from align_tf.data.sources.base import CLASSIFICATION, PAIRS, RETRIEVAL, Source, option
from align_tf.data.sources.collections import ClassificationData, RetrievalData
from align_tf.data.sources.registry import register_source

SYNTHETIC = "synthetic"


@register_source(SYNTHETIC)
class SyntheticSource(Source):
    """The built-in corpus: pairs, labelled images and captioned galleries."""

    needs_vocabulary = False

    def kinds(self, options=None) -> set:
        return {PAIRS, CLASSIFICATION, RETRIEVAL}

    def validate(self, data) -> None:
        """Nothing to check: the corpus is generated."""

    def classification(self, options, train: bool = False, download: bool = False):
        """The zero-shot test images (``synthetic_seed``), or the kNN/linear-probe fit images
        (``synthetic_seed + 1``)."""
        return synthetic_classification("train" if train else "test",
                                        option(options, "synthetic_examples_per_class", 40),
                                        option(options, "synthetic_seed", 20_000) + int(train))

    def retrieval(self, options, download: bool = False):
        captions = option(options, "captions_per_image", 5)
        if not captions:
            raise ValueError("eval.captions_per_image must be >= 1 with the synthetic dataset "
                             "(captions are generated, not kept)")
        return synthetic_retrieval(option(options, "synthetic_retrieval_rounds", 4), captions,
                                   option(options, "synthetic_seed", 20_000) + 2)

    def groups(self) -> dict:
        return synthetic_groups()


def synthetic_arrays(seed: int, num_per_class: int, size: int) -> dict:
    """``num_per_class`` images of every class, in class order, rendered at ``size``."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, pair in enumerate(synthetic.CLASSES):
        for _ in range(num_per_class):
            images.append(synthetic.render(pair, size, rng)[0])
            labels.append(label)
    return {"image": np.stack(images), "label": np.asarray(labels, np.int64)}


def synthetic_classification(split: str, num_per_class: int, seed: int) -> ClassificationData:
    """``num_per_class`` clean renders of each (colour, shape) class from ``seed``; ``split`` only
    names the set (zero-shot tests on one seed, kNN and the linear probe fit on another)."""
    rendered = {}  # image size → arrays: rendered once, re-embedded every call

    def make(image_size):
        if image_size not in rendered:
            rendered[image_size] = synthetic_arrays(seed, num_per_class, image_size)
        return tf.data.Dataset.from_tensor_slices(rendered[image_size])

    return ClassificationData(f"{SYNTHETIC}/{split}", make,
                              [synthetic.class_name(p) for p in synthetic.CLASSES])


def synthetic_retrieval(rounds: int, captions_per_image: int, seed: int) -> RetrievalData:
    """``rounds`` galleries of one image per class, each image with ``captions_per_image`` clean
    captions in varied wording. Retrieval is scored within a gallery, so every query has one right
    answer: two renders of a class differ only in size and background, often described alike."""
    rendered = {}

    def make(size):
        if size not in rendered:
            rng = np.random.default_rng(seed)
            images, captions, galleries = [], [], []
            for gallery in range(rounds):
                for pair in synthetic.CLASSES:
                    image, frac, bg = synthetic.render(pair, size, rng)
                    images.append(image)
                    captions.append([synthetic.caption(pair, frac, bg, rng, noise=0.0, partial=0.0)
                                     for _ in range(captions_per_image)])
                    galleries.append(gallery)
            rendered[size] = {"image": np.stack(images), "captions": np.asarray(captions, object),
                              "gallery": np.asarray(galleries, np.int64)}
        return tf.data.Dataset.from_tensor_slices(rendered[size])

    return RetrievalData(f"{SYNTHETIC}/retrieval", make, captions_per_image)


def synthetic_groups() -> dict:
    """Label groups of the synthetic classes: pairs held out of training and pairs seen."""
    return {"heldout": [synthetic.CLASSES.index(p) for p in synthetic.HELD_OUT],
            "seen": [synthetic.CLASSES.index(p) for p in synthetic.SEEN]}
