"""``multi30k:DIR``: Multi30K's 2016 test set (the 1,000 ``test_2016_flickr`` images) in English,
German, French and Czech, for ALIGN §8's zero-shot multilingual retrieval (Table 11).

The public repository's layout (``github.com/multi30k/dataset``; files may be gzipped, ``.gz``)::

    DIR/data/task2/raw/test_2016.{1..5}.{en,de}        5 captions per image (task 2)
    DIR/data/task2/image_splits/test_2016_images.txt   the images, in caption order
    DIR/data/task1/raw/test_2016_flickr.{fr,cs}        1 caption per image (task 1)
    DIR/data/task1/image_splits/test_2016_flickr.txt   the same names, in the same order
    DIR/flickr30k-images/1000092795.jpg                the Flickr30K images

Line ``i`` of every caption file describes image ``i`` of its list. A missing file, a caption
file with another line count than its list, or two lists that differ is a one-line error: the
benchmark's protocol skips nothing. ``max_examples`` keeps the first N images.
"""

from __future__ import annotations

import gzip
import os

import numpy as np
import tensorflow as tf

from align_tf.data.sources.base import Source, option
from align_tf.data.sources.collections import RetrievalData
from align_tf.data.sources.registry import register_source

MULTI30K = "multi30k"  # the kind of data multi30k:DIR yields: images with captions per language
LANGUAGES = ("en", "de", "fr", "cs")
TASK2_CAPTIONS = 5  # en and de: test_2016.{1..5}; fr and cs: one caption (task 1)
IMAGE_LISTS = {"task2": "data/task2/image_splits/test_2016_images.txt",
               "task1": "data/task1/image_splits/test_2016_flickr.txt"}


def caption_files(language: str) -> list:
    """The caption files of ``language`` (relative to DIR, without ``.gz``)."""
    if language in ("en", "de"):
        return [f"data/task2/raw/test_2016.{k}.{language}" for k in range(1, TASK2_CAPTIONS + 1)]
    return [f"data/task1/raw/test_2016_flickr.{language}"]


def read_lines(directory: str, relative: str) -> list:
    """The lines of ``DIR/relative`` or ``DIR/relative.gz`` (UTF-8, newline stripped)."""
    path = os.path.join(directory, relative)
    for candidate, opener in ((path, tf.io.gfile.GFile), (path + ".gz", None)):
        if tf.io.gfile.exists(candidate):
            with tf.io.gfile.GFile(candidate, "rb") as f:
                data = f.read()
            if opener is None:
                data = gzip.decompress(data)
            try:
                return data.decode("utf-8").splitlines()
            except UnicodeDecodeError as e:
                raise ValueError(f"multi30k: {candidate} is not UTF-8 ({e.reason} at byte "
                                 f"{e.start})") from None
    raise FileNotFoundError(f"multi30k: {path} (or .gz) does not exist (the Multi30K repository's "
                            "data/ folder goes in DIR/data/; docs/evaluation.md)")


class Multi30kData(RetrievalData):
    """The test images, each with its captions in ``languages`` order (``per_language`` each).

    Attributes:
      caption_languages: the language of each of an image's captions (the same for every image).
    """

    def __init__(self, name, make_examples, caption_languages):
        super().__init__(name, make_examples, captions_per_image=None)
        self.caption_languages = tuple(caption_languages)


def read(directory: str, max_images: int | None = None) -> tuple:
    """``(image paths, captions per image, caption languages)`` of the test set (docstring)."""
    images = {task: [n.strip() for n in read_lines(directory, path) if n.strip()]
              for task, path in IMAGE_LISTS.items()}
    if images["task1"] != images["task2"]:
        raise ValueError(f"multi30k: {IMAGE_LISTS['task1']} and {IMAGE_LISTS['task2']} list "
                         "different images (Multi30K's test_2016_flickr lists are the same)")
    names = images["task1"]
    captions, languages = [[] for _ in names], []
    for language in LANGUAGES:
        for relative in caption_files(language):
            lines = read_lines(directory, relative)
            if len(lines) != len(names):
                raise ValueError(f"multi30k: {relative} has {len(lines)} captions for the "
                                 f"{len(names)} images of its list")
            for per_image, line in zip(captions, lines):
                per_image.append(line.strip())
            languages.append(language)
    paths = [os.path.join(directory, "flickr30k-images", n) for n in names]
    if max_images:
        paths, captions = paths[:max_images], captions[:max_images]
    missing = [p for p in paths if not tf.io.gfile.exists(p)]
    if missing:
        raise FileNotFoundError(f"multi30k: image {missing[0]} does not exist ({len(missing)} of "
                                f"the {len(paths)} test images are missing)")
    return paths, captions, languages


@register_source(MULTI30K)
class Multi30kSource(Source):
    """Multi30K's 2016 test set (``multi30k:DIR``): retrieval per language (module docstring)."""

    takes_argument = True
    argument_name = "DIR"

    def kinds(self, options=None) -> set:
        return {MULTI30K}

    def retrieval(self, options, download: bool = False) -> Multi30kData:
        paths, captions, languages = read(self.argument, option(options, "max_examples"))

        def make(image_size):
            ds = tf.data.Dataset.from_tensor_slices(
                {"path": tf.constant(paths, tf.string),
                 "captions": tf.constant(np.array(captions, dtype=object), tf.string)})
            return ds.map(lambda ex: {"image": tf.io.decode_image(
                tf.io.read_file(ex["path"]), channels=3, expand_animations=False),
                "captions": ex["captions"]}, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)

        return Multi30kData("multi30k/test_2016_flickr", make, languages)
