"""Evaluation data: labelled image sets (zero-shot, kNN, linear probe) and captioned image sets
(retrieval), from the built-in synthetic corpus, our TFRecord shards, or TFDS.

Dataset names (spelt as training sources are, ``align_tf.data.sources``):
  * ``synthetic``: the built-in coloured-shapes corpus (``align_tf.data.synthetic``), rendered
    fresh from seeded generators (the config's ``eval.synthetic_seed``, far from training's
    ``seed``), so every evaluation of a model sees the same images; classes are all 30
    (colour, shape) pairs, retrieval is scored within galleries of one image per class.
  * ``tfrecord:GLOB``: our ``tf.train.Example`` shards (``image/encoded`` + ``caption``), for
    retrieval. Records with byte-identical images are one image with several captions, so a
    caption set written one pair per record (MSCOCO's 5 per image) keeps the 5-caption protocol;
    a record may also hold several ``caption`` values. Corrupt data is skipped as training skips
    it (``align_tf.data.tfrecord``): an image that does not decode, and a record that does not
    parse or has no caption, are left out and counted (``RetrievalData.skipped_counts``: the
    report's ``num_skipped_images`` / ``num_skipped_records``); a shard whose framing is damaged
    is read up to the damage, with a logged warning.
  * ``img2dataset_tfrecord:GLOB``: img2dataset's TFRecord shards (``jpg`` + ``txt``), likewise.
  * ``tfds:NAME``, or a bare TFDS name, optionally with config/version (``cifar10``, ``cifar100``, ``imagenet2012``,
    ``coco_captions``, ``oxford_iiit_pet:3.*.*``): a ``label`` ClassLabel feature makes it a
    classification set, a ``captions/text`` (or ``caption``) feature a retrieval set.
    ``imagenet2012`` needs its archives placed in TFDS's manual directory first (TFDS docs).

Data objects embed lazily with an ``Encoder`` (images preprocessed at the encoder's size), so one
object serves a checkpoint, a SavedModel, or a model during training.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Callable

import numpy as np
import tensorflow as tf

from align_tf import prompts
from align_tf.data import img2dataset, sources, synthetic, tfrecord

SYNTHETIC = "synthetic"
TFRECORD_PREFIX = "tfrecord:"
IMG2DATASET_TFRECORD_PREFIX = "img2dataset_tfrecord:"
# Record sources: prefix → (image, caption) feature names.
RECORD_PREFIXES = {TFRECORD_PREFIX: tfrecord.KEYS, IMG2DATASET_TFRECORD_PREFIX: img2dataset.KEYS}
CLASSIFICATION, RETRIEVAL = "classification", "retrieval"

log = logging.getLogger(__name__)


class UnknownDatasetError(ValueError):
    """The dataset name is neither built in, a TFRecord glob, nor a TFDS dataset."""


class ClassificationData:
    """Labelled images, embedded on demand.

    Args:
      name: for reports.
      make_dataset: ``f(encoder) -> tf.data.Dataset`` of unbatched ``{"image", "label"}``.
      classnames: names in label order (used for prompts; their count is the label space).
    """

    def __init__(self, name: str, make_dataset: Callable, classnames):
        self.name, self.make_dataset, self.classnames = name, make_dataset, tuple(classnames)

    def embed_images(self, encoder) -> tuple:
        """``(embeddings (N, D), labels (N,) int64)``; once per ``encoder.fixed_weights()`` block,
        so zero-shot, kNN and the linear probe share the test images' embeddings."""
        def embed():
            emb, extras = encoder.embed_image_dataset(self.make_dataset(encoder), keys=("label",))
            return emb, extras["label"].astype(np.int64)
        return encoder.memoize(self, embed)


class RetrievalData:
    """Images with one or more captions each, embedded on demand.

    Args:
      name: for reports.
      make_dataset: ``f(encoder) -> tf.data.Dataset`` of unbatched ``{"image", "captions"}``
        (``captions``: a string vector, non-empty), optionally with an int ``"gallery"``: images
        and captions are then ranked only within their gallery (the synthetic set's rounds).
      captions_per_image: keep at most this many captions per image (the MSCOCO/Flickr30K
        protocol uses 5; some MSCOCO images have 6 or 7); None keeps all.
    """

    def __init__(self, name: str, make_dataset: Callable, captions_per_image: int | None = 5,
                 stats: tfrecord.ReadStats | None = None):
        self.name, self.make_dataset, self.captions_per_image = name, make_dataset, captions_per_image
        self.stats = stats  # where make_dataset counts what it skips; None: it skips nothing

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


# ------------------------------------------------------------------------------------ synthetic


def _synthetic_arrays(seed: int, num_per_class: int, size: int) -> dict:
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

    def make(encoder):
        if encoder.image_size not in rendered:
            rendered[encoder.image_size] = _synthetic_arrays(seed, num_per_class, encoder.image_size)
        return tf.data.Dataset.from_tensor_slices(rendered[encoder.image_size])

    return ClassificationData(f"{SYNTHETIC}/{split}", make,
                              [synthetic.class_name(p) for p in synthetic.CLASSES])


def synthetic_retrieval(rounds: int, captions_per_image: int, seed: int) -> RetrievalData:
    """``rounds`` galleries of one image per class, each image with ``captions_per_image`` clean
    captions in varied wording. Retrieval is scored within a gallery, so every query has one right
    answer: two renders of a class differ only in size and background, often described alike."""
    rendered = {}

    def make(encoder):
        size = encoder.image_size
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


# ------------------------------------------------------------------------------------ TFRecord


def record_source(name: str) -> tuple | None:
    """``(glob, (image, caption) feature names)`` of a ``tfrecord:``/``img2dataset_tfrecord:``
    name, else ``None``."""
    for prefix, keys in RECORD_PREFIXES.items():
        if name.startswith(prefix):
            return name[len(prefix):], keys
    return None


def tfds_name(name: str) -> str:
    """The TFDS dataset of ``tfds:NAME`` or a bare ``NAME``."""
    return name[len(sources.TFDS_PREFIX):] if name.startswith(sources.TFDS_PREFIX) else name


def record_retrieval(name: str, max_images: int | None = None,
                     captions_per_image: int | None = 5) -> RetrievalData:
    """``tfrecord_retrieval`` of a ``tfrecord:GLOB`` or ``img2dataset_tfrecord:GLOB`` name."""
    pattern, keys = record_source(name)
    return tfrecord_retrieval(pattern, max_images, captions_per_image, keys, name)


def tfrecord_retrieval(pattern: str, max_images: int | None = None,
                       captions_per_image: int | None = 5, keys: tuple = tfrecord.KEYS,
                       name: str | None = None) -> RetrievalData:
    """Captioned images from TFRecord shards, grouped by identical image bytes (see module);
    ``keys``: the (image, caption) feature names (ours, or img2dataset's). Corrupt images and
    records are skipped and counted in the returned data's ``stats`` (per ``make_dataset`` call);
    ``max_images`` caps the distinct images read, corrupt ones included."""
    image_key, caption_key = keys
    stats = tfrecord.ReadStats()

    def records(path):
        """The shard's records up to any damage to its framing (as training reads it)."""
        try:
            yield from tf.data.TFRecordDataset(path)
        except tf.errors.DataLossError as e:
            log.warning("%s is damaged; its remaining records are skipped (%s)", path,
                        str(e).splitlines()[0])

    def make(encoder):
        stats.reset()  # counts of this pass only: the set is re-read for every evaluation
        files = sorted(tf.io.gfile.glob(pattern))
        if not files:
            raise FileNotFoundError(f"No TFRecord files match {pattern!r}.")
        features = {image_key: tf.io.FixedLenFeature([], tf.string),
                    caption_key: tf.io.VarLenFeature(tf.string)}
        order, groups = [], {}
        # Grouping needs every record's image hash, so records are read once in Python; only one
        # copy of each distinct image's bytes is kept (evaluation sets are thousands of images).
        for path in files:
            for record in records(path):
                try:
                    ex = tf.io.parse_single_example(record, features)
                except tf.errors.InvalidArgumentError:
                    ex = None
                caps = tf.sparse.to_dense(ex[caption_key]).numpy() if ex is not None else ()
                if not len(caps):  # training's reader needs a caption too
                    stats.record("corrupt_record", path)
                    continue
                encoded = ex[image_key].numpy()
                key = hashlib.sha1(encoded).digest()
                if key not in groups:
                    if max_images is not None and len(order) >= max_images:
                        continue
                    groups[key] = (encoded, [], path)
                    order.append(key)
                groups[key][1].extend(c.decode("utf-8") for c in caps)
        captions = tf.ragged.constant([groups[k][1] for k in order], dtype=tf.string)
        ds = tf.data.Dataset.from_tensor_slices({
            "image/encoded": tf.constant([groups[k][0] for k in order], tf.string),
            "source": tf.constant([groups[k][2] for k in order], tf.string),
            "index": tf.range(len(order))})
        # Training's decoder: an image that does not decode is skipped and counted.
        ds = tfrecord.decode_images(ds, stats)
        return ds.map(lambda ex: {"image": ex["image"], "captions": captions[ex["index"]]})

    return RetrievalData(name or f"tfrecord:{pattern}", make, captions_per_image, stats)


# ------------------------------------------------------------------------------------ TFDS


def _tfds_kind(info, label_key: str) -> str:
    features = info.features
    keys = set(features.keys())
    if "captions" in keys or "caption" in keys:
        return RETRIEVAL
    if label_key in keys and hasattr(features[label_key], "names"):
        return CLASSIFICATION
    raise UnknownDatasetError(f"TFDS dataset {info.name!r} has neither a {label_key!r} class "
                              f"label nor captions (features: {sorted(keys)})")


def _tfds_builder(name: str, data_dir: str | None):
    import tensorflow_datasets as tfds
    try:
        return tfds.builder(tfds_name(name), data_dir=data_dir)
    except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}: use 'synthetic', 'tfrecord:GLOB', "
            f"'img2dataset_tfrecord:GLOB' or 'tfds:NAME' (a bare TFDS name works too) such as "
            f"cifar10, cifar100, imagenet2012, coco_captions ({type(e).__name__}: "
            f"{str(e).splitlines()[0]})") from None


def default_split(info, train: bool = False) -> str:
    """``train`` for fitting (kNN, linear probe); for testing the first of test/validation/val."""
    splits = set(info.splits.keys()) if info.splits else set()
    if train:
        return "train"
    for split in ("test", "validation", "val"):
        if split in splits:
            return split
    return "test"


def _tfds_split(name: str, split: str | None, train: bool, data_dir: str | None, download: bool,
                max_examples: int | None) -> tf.data.Dataset:
    """Loads a TFDS split (preparing it first if ``download``); ``split=None`` picks the default
    only now, because a dataset's split names are known once it is prepared (ImageNet: no test)."""
    builder = _tfds_builder(name, data_dir)
    if download:
        builder.download_and_prepare()
    ds = builder.as_dataset(split=split or default_split(builder.info, train), shuffle_files=False)
    return ds.take(max_examples) if max_examples else ds


def tfds_classification(name: str, split: str | None = None, train: bool = False,
                        data_dir: str | None = None, download: bool = True,
                        max_examples: int | None = None, image_key: str = "image",
                        label_key: str = "label") -> ClassificationData:
    """A TFDS classification split; class names from ``prompts`` (CIFAR, ImageNet) or TFDS.

    ``split`` None: ``train`` if ``train`` else test, validation or val (the first that exists).
    """
    info = _tfds_builder(name, data_dir).info
    if _tfds_kind(info, label_key) != CLASSIFICATION:
        raise ValueError(f"{name} is a captioned dataset, not a classification one")
    classnames = prompts.get_classnames(tfds_name(name), info, label_key)

    def make(encoder):
        ds = _tfds_split(name, split, train, data_dir, download, max_examples)
        return ds.map(lambda ex: {"image": ex[image_key], "label": tf.cast(ex[label_key], tf.int64)})

    return ClassificationData(f"{name}/{split or ('train' if train else 'test')}", make,
                              classnames)


def tfds_retrieval(name: str, split: str | None = None, data_dir: str | None = None,
                   download: bool = True, max_images: int | None = None,
                   captions_per_image: int | None = 5, image_key: str = "image") -> RetrievalData:
    """A TFDS captioned split (``captions/text`` as in ``coco_captions``, or ``caption``).

    ``coco_captions``' ``test`` split is Karpathy's 5k test images (the ALIGN/CLIP MSCOCO 5K set).
    """
    info = _tfds_builder(name, data_dir).info
    if _tfds_kind(info, "label") != RETRIEVAL:
        raise ValueError(f"{name} has no captions; retrieval needs a captioned dataset")

    def captions_of(ex):
        if "captions" in ex:
            caps = ex["captions"]
            return caps["text"] if isinstance(caps, dict) else caps
        return tf.reshape(ex["caption"], [-1])

    def make(encoder):
        ds = _tfds_split(name, split, False, data_dir, download, max_images)
        return ds.map(lambda ex: {"image": ex[image_key], "captions": captions_of(ex)})

    return RetrievalData(f"{name}/{split or 'test'}", make, captions_per_image)


# ------------------------------------------------------------------------------------ dispatch


def dataset_kinds(name: str, data_dir: str | None = None) -> set:
    """Which evaluations ``name`` supports: a subset of {CLASSIFICATION, RETRIEVAL}.

    Raises:
      UnknownDatasetError: ``name`` is not synthetic, a TFRecord glob, or a TFDS dataset.
    """
    if name == SYNTHETIC:
        return {CLASSIFICATION, RETRIEVAL}
    if record_source(name) is not None:
        return {RETRIEVAL}
    return {_tfds_kind(_tfds_builder(name, data_dir).info, "label")}
