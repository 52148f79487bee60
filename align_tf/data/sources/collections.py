"""The data objects evaluation and fine-tuning read: labelled images (``ClassificationData``) and
captioned images (``RetrievalData``), built by a source (``Source.classification`` /
``Source.retrieval``) and embedded lazily by any encoder (a checkpoint's, a SavedModel's, a model's
during training): images are made at the encoder's ``image_size``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from align_tf.data import tfrecord


class _Examples:
    """A set whose examples are made on demand (``self.examples(image_size)``)."""

    examples: Callable

    def make_dataset(self, encoder) -> tf.data.Dataset:
        """The examples as ``encoder`` (anything with an ``image_size``) sees them."""
        return self.examples(getattr(encoder, "image_size", None))


class ClassificationData(_Examples):
    """Labelled images, embedded on demand.

    Args:
      name: for reports.
      make_examples: ``f(image_size) -> tf.data.Dataset`` of unbatched ``{"image", "label"}``
        (``image_size``: what rendered sets render at; read sets ignore it).
      classnames: names in label order (used for prompts; their count is the label space).
    """

    def __init__(self, name: str, make_examples: Callable, classnames):
        self.name, self.examples, self.classnames = name, make_examples, tuple(classnames)

    def arrays(self, image_size: int) -> dict:
        """Every ``{"image", "label"}`` as numpy arrays (for an in-memory set: synthetic)."""
        ds = self.examples(image_size).batch(1 << 30)
        return {k: v.numpy() for k, v in ds.get_single_element().items()}

    def embed_images(self, encoder) -> tuple:
        """``(embeddings (N, D), labels (N,) int64)``; once per ``encoder.fixed_weights()`` block,
        so zero-shot, kNN and the linear probe share the test images' embeddings."""
        def embed():
            emb, extras = encoder.embed_image_dataset(self.make_dataset(encoder), keys=("label",))
            return emb, extras["label"].astype(np.int64)
        return encoder.memoize(self, embed)


class RetrievalData(_Examples):
    """Images with one or more captions each, embedded on demand.

    Args:
      name: for reports.
      make_examples: ``f(image_size) -> tf.data.Dataset`` of unbatched ``{"image", "captions"}``
        (``captions``: a string vector, non-empty), optionally with an int ``"gallery"``: images
        and captions are then ranked only within their gallery (the synthetic set's rounds).
      captions_per_image: keep at most this many captions per image (the MSCOCO/Flickr30K
        protocol uses 5; some MSCOCO images have 6 or 7); None keeps all.
    """

    def __init__(self, name: str, make_examples: Callable, captions_per_image: int | None = 5,
                 stats: tfrecord.ReadStats | None = None):
        self.name, self.examples, self.captions_per_image = name, make_examples, captions_per_image
        self.stats = stats  # where make_examples counts what it skips; None: it skips nothing

    def skipped_counts(self) -> dict:
        """``{"num_skipped_images", "num_skipped_records"}`` of the last ``embed_images`` (corrupt
        images and unparseable records left out); ``{}`` for a set that skips nothing."""
        if self.stats is None:
            return {}
        counts = self.stats.as_dict()
        return {"num_skipped_images": float(counts["corrupt_image"]),
                "num_skipped_records": float(counts["corrupt_record"])}

    def embed_images(self, encoder) -> tuple:
        """``(image embeddings (N, D), captions list[str], text_to_image (N_txt,),
        gallery (N,) int64)``; ``gallery`` is all zeros for a set without galleries."""
        limit = self.captions_per_image

        def count(ex):
            captions = ex["captions"] if limit is None else ex["captions"][:limit]
            gallery = tf.cast(ex.get("gallery", 0), tf.int64)
            return dict(ex, captions=captions, num_captions=tf.size(captions), gallery=gallery)

        emb, extras = encoder.embed_image_dataset(self.make_dataset(encoder).map(count),
                                                  keys=("captions", "num_captions", "gallery"))
        captions, text_to_image = [], []
        for i, (row, n) in enumerate(zip(extras["captions"], extras["num_captions"])):
            if n == 0:
                raise ValueError(f"{self.name}: image {i} has no caption")
            captions.extend(c.decode("utf-8") for c in row[:n])
            text_to_image.extend([i] * int(n))
        return emb, captions, np.asarray(text_to_image, np.int64), extras["gallery"]
