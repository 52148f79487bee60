"""Sample data for demos and quick checks: pictures of coloured shapes drawn by the built-in
synthetic corpus (``align_tf.data.synthetic``), which the default model is trained on."""

from __future__ import annotations

import numpy as np


def sample_images(num: int, size: int, seed: int = 0, stride: int = 1) -> dict:
    """``num`` pictures of one coloured shape each, ``size`` px square.

    The classes are the corpus' seen (colour, shape) pairs, taking every ``stride``-th in turn.
    Returns a dict: ``image`` uint8 ``np.ndarray [num, size, size, 3]`` and ``caption``, the class
    name of each (``list[str]``, e.g. ``"red circle"``).
    """
    from align_tf.data import synthetic
    rng = np.random.default_rng(seed)
    images = np.empty((num, size, size, 3), np.uint8)
    captions = []
    for i in range(num):
        pair = synthetic.SEEN[(i * stride) % len(synthetic.SEEN)]
        images[i] = synthetic.render(pair, size, rng)[0]
        captions.append(synthetic.class_name(pair))
    return {"image": images, "caption": captions}


def sample_pairs(num: int, size: int = 64, noise: float = 0.2, partial: float = 0.1,
                 seed: int = 0) -> dict:
    """``num`` image / caption pairs of the synthetic corpus, with web-like noisy captions (a share
    ``noise`` junk or mismatched, a share ``partial`` naming only the colour or the shape).
    Returns a dict: ``image`` uint8 ``[num, size, size, 3]``, ``caption`` (``list[str]``)."""
    from align_tf.data import synthetic
    pairs = synthetic.make_pairs(num, size, noise=noise, partial=partial, seed=seed)
    return {"image": pairs["image"], "caption": list(pairs["caption"])}
