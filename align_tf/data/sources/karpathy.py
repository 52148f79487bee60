"""``coco_karpathy:DIR`` and ``flickr30k_karpathy:DIR``: MS-COCO and Flickr30K as downloaded, with
Andrej Karpathy's split files (the splits ALIGN's Table 1 reports: MSCOCO 5K test, Flickr30K 1K).

Layouts (``docs/evaluation.md``)::

    DIR/dataset_coco.json          DIR/dataset_flickr30k.json
    DIR/val2014/COCO_val2014_000000391895.jpg
    DIR/train2014/...              DIR/flickr30k-images/1000092795.jpg

The JSON is ``{"images": [{"filepath": "val2014", "filename": ..., "cocoid" (Flickr: "imgid"),
"split": "train"|"restval"|"val"|"test", "sentences": [{"raw", "sentid", ...}]}]}``. Each image
keeps its first 5 sentences (some COCO images have 6 or 7), as every paper reports it.

The split: ``eval.split`` / ``--split`` (default ``test``), or a ``:SPLIT`` suffix of the spec
(``coco_karpathy:/data/coco:val``); ``+`` joins splits. Training (``data.name``, ``align_tf.finetune
--task=retrieval``) reads ``train+restval`` unless the spec names a split: every (image, caption)
pair once per epoch, in a permutation keyed by ``(seed, epoch)`` (exact resume).

A missing JSON or image file, an image without sentences or an unknown split is a one-line error
naming it: the benchmark's protocol skips nothing.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import tensorflow as tf

from align_tf.data.sources.base import PAIRS, RETRIEVAL, Source, check_vocabulary, option
from align_tf.data.sources.collections import RetrievalData
from align_tf.data.sources.registry import register_source

SPLITS = ("train", "restval", "val", "test")
CAPTIONS_PER_IMAGE = 5
_SPLIT = re.compile(r"^(train|restval|val|test)(\+(train|restval|val|test))*$")


class KarpathySplit:
    """The images of one split (in JSON order) with their first captions.

    Attributes:
      paths: each image's file; ``filenames``: its name (``COCO_val2014_000000391895.jpg``).
      captions: per image, its first ``CAPTIONS_PER_IMAGE`` raw sentences; ``sentids``: theirs.
      all_sentids: every sentid of the split's images, the 6th and 7th sentences included.
    """

    def __init__(self, name: str, split: str, paths, filenames, captions, sentids,
                 all_sentids=()):
        self.name, self.split = name, split
        self.paths, self.filenames = list(paths), list(filenames)
        self.captions, self.sentids, self.all_sentids = captions, sentids, set(all_sentids)

    def __len__(self) -> int:
        return len(self.paths)

    def text_to_image(self) -> np.ndarray:
        """Each caption's image index, captions in image order."""
        return np.repeat(np.arange(len(self)), [len(c) for c in self.captions]).astype(np.int64)

    def retrieval_data(self, captions_per_image: int | None = CAPTIONS_PER_IMAGE,
                       cls=RetrievalData, **kwargs) -> RetrievalData:
        """The split as ``RetrievalData`` (``cls``: a subclass, given ``kwargs``): images read
        from their files and decoded (any JPEG/PNG, grey ones as RGB)."""
        paths, captions = self.paths, self.captions

        def make(image_size):
            ds = tf.data.Dataset.from_tensor_slices(
                {"path": tf.constant(paths, tf.string),
                 "captions": tf.ragged.constant(captions, dtype=tf.string)})
            return ds.map(lambda ex: {"image": _decode(ex["path"]), "captions": ex["captions"]},
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

        return cls(f"{self.name}/{self.split}", make, captions_per_image, **kwargs)


def _decode(path):
    return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)


def parse_split(split: str | None, where: str, default: str) -> str:
    """``split`` (None: ``default``), checked: train/restval/val/test, or ``+``-joined."""
    split = default if split in (None, "") else str(split).strip()
    if not _SPLIT.match(split):
        raise ValueError(f"{where}: unknown Karpathy split {split!r}; use one of {list(SPLITS)} "
                         "or several joined by '+' (train+restval)")
    return split


def read_split(directory: str, json_name: str, image_dir, split: str, name: str,
               max_images: int | None = None) -> KarpathySplit:
    """The images of ``split`` (``a+b``: both) in Karpathy's ``DIR/json_name``.

    ``image_dir(entry)`` is the folder (under ``directory``) of a JSON image entry. Raises a
    one-line ``FileNotFoundError`` / ``ValueError`` naming the missing or bad file or entry.
    """
    path = os.path.join(directory, json_name)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{name}: {path} does not exist (Karpathy's split file; "
                                "docs/evaluation.md says where to get it)")
    try:
        with tf.io.gfile.GFile(path) as f:
            images = json.load(f)["images"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{name}: {path} is not a Karpathy split file with an 'images' list "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    wanted = set(split.split("+"))
    paths, filenames, captions, sentids, every = [], [], [], [], set()
    for i, image in enumerate(images):
        try:
            if image["split"] not in wanted:
                continue
            sentences = image["sentences"][:CAPTIONS_PER_IMAGE]
            filename = image["filename"]
            folder = image_dir(image)
            texts = [str(s["raw"]) for s in sentences]
            ids = [int(s["sentid"]) for s in sentences]
            every.update(int(s["sentid"]) for s in image["sentences"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{name}: {path}: images[{i}] lacks {e} (needs split, filename, "
                             "sentences with raw and sentid)") from None
        if not texts:
            raise ValueError(f"{name}: {path}: image {filename} has no sentences")
        paths.append(os.path.join(directory, folder, filename))
        filenames.append(filename)
        captions.append(texts)
        sentids.append(ids)
        if max_images and len(paths) >= max_images:
            break
    if not paths:
        raise ValueError(f"{name}: {path} has no images in split {split!r}")
    missing = [p for p in paths if not tf.io.gfile.exists(p)]
    if missing:
        raise FileNotFoundError(f"{name}: image {missing[0]} does not exist ({len(missing)} of "
                                f"the {len(paths)} {split} images are missing)")
    return KarpathySplit(name, split, paths, filenames, captions, sentids, every)


class KarpathySource(Source):
    """A Karpathy-split caption set in a directory (``NAME:DIR[:SPLIT]``)."""

    takes_argument = True
    argument_name = "DIR"
    json_name = ""

    def __init__(self, argument: str = ""):
        super().__init__(argument)
        head, colon, tail = argument.rpartition(":")
        self.directory, self.split = (head, tail) if colon and _SPLIT.match(tail) else (argument,
                                                                                          None)

    def image_dir(self, image: dict) -> str:
        """The folder of a JSON image entry, relative to the directory."""
        raise NotImplementedError

    def read(self, split: str, max_images: int | None = None) -> KarpathySplit:
        return read_split(self.directory, self.json_name, self.image_dir, split, self.name,
                          max_images)

    def kinds(self, options=None) -> set:
        return {PAIRS, RETRIEVAL}

    def eval_split(self, options) -> str:
        """The spec's split, else ``eval.split`` (None: ``test``)."""
        return parse_split(self.split or option(options, "split"), f"{self.spec} split", "test")

    def retrieval(self, options, download: bool = False):
        """The evaluation split's images with their first 5 captions (``captions_per_image``
        keeps fewer)."""
        captions = option(options, "captions_per_image", CAPTIONS_PER_IMAGE) or None
        data = self.read(self.eval_split(options), option(options, "max_examples"))
        return data.retrieval_data(min(captions or CAPTIONS_PER_IMAGE, CAPTIONS_PER_IMAGE))

    # ---------------------------------------------------------------------------- training

    def validate(self, data) -> None:
        """The vocabulary, the JSON, the split and its image files exist."""
        check_vocabulary(data, self.spec)
        self.read(parse_split(self.split, f"data.name={self.spec!r}", "train+restval"))

    def training_stream(self, config, layout, first_batch, input_context=None, stats=None):
        """Every (image, caption) pair of the training split once per epoch (module docstring)."""
        split = self.read(parse_split(self.split, f"data.name={self.spec!r}", "train+restval"))
        return pair_stream(split, config.seed, layout, first_batch)


def pair_stream(split: KarpathySplit, seed: int, layout, first_batch: int) -> tf.data.Dataset:
    """One input pipeline's endless ``{"image/encoded", "caption", "position"}`` from global batch
    ``first_batch`` on: epoch ``e`` is a permutation of all pairs keyed by ``(seed, e)``."""
    from align_tf.data import sampling
    pair_image = split.text_to_image()
    num = len(pair_image)
    paths = tf.constant(split.paths, tf.string)
    captions = tf.constant([c for cs in split.captions for c in cs], tf.string)
    pair_image = tf.constant(pair_image, tf.int64)
    start = first_batch * layout.global_batch
    first_epoch, offset = divmod(start, num)

    def epoch_order(epoch):
        key = sampling.stream_key(seed, sampling.SHUFFLE, epoch, 0)
        return tf.data.Dataset.from_tensor_slices(
            tf.random.experimental.stateless_shuffle(tf.range(num, dtype=tf.int64), key))

    ds = tf.data.Dataset.counter(first_epoch).flat_map(epoch_order).skip(offset).enumerate(start)

    def mine(position, pair):
        return (position % layout.global_batch) // layout.per_pipeline == layout.pipeline_id

    def as_example(position, pair):
        return {"image/encoded": tf.io.read_file(tf.gather(paths, tf.gather(pair_image, pair))),
                "caption": tf.gather(captions, pair), "position": position}

    return ds.filter(mine).map(as_example, num_parallel_calls=tf.data.AUTOTUNE,
                               deterministic=True)


@register_source("coco_karpathy")
class CocoKarpathySource(KarpathySource):
    """MS-COCO 2014 with ``dataset_coco.json`` (test: the 5K set of ALIGN's Table 1)."""

    json_name = "dataset_coco.json"

    def image_dir(self, image: dict) -> str:
        return image["filepath"]  # val2014 / train2014


@register_source("flickr30k_karpathy")
class Flickr30kKarpathySource(KarpathySource):
    """Flickr30K with ``dataset_flickr30k.json`` (test: the 1K set of ALIGN's Table 1)."""

    json_name = "dataset_flickr30k.json"

    def image_dir(self, image: dict) -> str:
        return "flickr30k-images"
