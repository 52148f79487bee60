"""``tfds:NAME[/SPLIT]``: a TensorFlow Datasets set, optionally with config and version
(``tfds:cifar10``, ``tfds:coco_captions/train+restval``, ``tfds:oxford_iiit_pet:3.*.*``,
``tfds:wmt_t2t/de-en/test``).

A ``label`` ClassLabel feature makes it a classification set, a ``captions/text`` (or
``caption``) feature a captioned one: pairs for training, retrieval for evaluation.
``coco_captions`` is the Karpathy split (``test``: the ALIGN/CLIP MSCOCO 5K set). ``imagenet2012``
needs its archives in TFDS's manual directory first (TFDS docs).

The split: the segment after the last ``/`` when there are two, or when it reads as a split
(``train``, ``test``, ``validation``, ``val``, ``restval``…, ``+``-joined, with ``[…]`` slices);
otherwise training reads ``train`` and evaluation ``eval.split`` (None: test, validation or val).
Training never downloads (prepare the set first: ``tfds build`` or ``align_tf.evaluate
--download``), reads ``data.tfds_data_dir``, and draws one random caption per image per epoch
with exact resume (``tfds_captions.training_stream``). Evaluation reads ``eval.data_dir``.
"""

from __future__ import annotations

import re

import tensorflow as tf

from align_tf import prompts
from align_tf.data import tfds_captions
from align_tf.data.sources.base import (CLASSIFICATION, PAIRS, RETRIEVAL, Source,
                                          check_vocabulary, option)
from align_tf.data.sources.collections import ClassificationData, RetrievalData
from align_tf.data.sources.registry import UnknownSourceError, register_source

_SPLIT_WORD = re.compile(r"^(train|test|validation|val|valid|restval|dev|all)(\[[^\]]*\])?$")


def _is_split(segment: str) -> bool:
    return all(_SPLIT_WORD.match(part) for part in segment.split("+"))


def split_argument(argument: str) -> tuple:
    """``(dataset, split or None)`` of ``NAME[/CONFIG][:VERSION][/SPLIT]`` (module docstring)."""
    head, slash, last = argument.rpartition("/")
    if slash and (head.count("/") >= 1 or _is_split(last)):
        return head, last
    return argument, None


@register_source("tfds")
class TfdsSource(Source):
    """A TFDS set (``tfds:NAME[/SPLIT]``)."""

    takes_argument = True
    argument_name = "NAME[/split]"

    def __init__(self, argument: str = ""):
        super().__init__(argument)
        self.dataset, self.split = split_argument(argument)
        self._infos = {}  # data_dir → DatasetInfo (metadata is read once)

    @property
    def results_key(self) -> str:
        """The TFDS dataset (``cifar10``): a TFDS set is known by its own name, as reports before
        [house] keyed it."""
        return self.prompt_name

    @property
    def prompt_name(self) -> str:
        """The bare TFDS name (``cifar10``): its class names and prompts are shipped."""
        return self.dataset.split(":")[0].split("/")[0]

    def builder(self, data_dir: str | None = None):
        """The TFDS builder; ``UnknownSourceError`` naming the choices if TFDS has no such set."""
        import tensorflow_datasets as tfds
        try:
            return tfds.builder(self.dataset, data_dir=data_dir)
        except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:
            raise UnknownSourceError(
                f"unknown dataset {self.dataset!r}: use 'synthetic', 'tfrecord:GLOB', "
                f"'img2dataset_tfrecord:GLOB' or 'tfds:NAME' such as tfds:cifar10, "
                f"tfds:cifar100, tfds:imagenet2012, tfds:coco_captions ({type(e).__name__}: "
                f"{str(e).splitlines()[0]})") from None

    def info(self, data_dir: str | None = None):
        if data_dir not in self._infos:
            self._infos[data_dir] = self.builder(data_dir).info
        return self._infos[data_dir]

    def kinds(self, options=None) -> set:
        kind = tfds_kind(self.info(option(options, "data_dir")), "label")
        return {PAIRS, RETRIEVAL} if kind == RETRIEVAL else {CLASSIFICATION}

    def classification(self, options, train: bool = False, download: bool = False):
        """The fit split (``train_split``, None: train) or the test split (the spec's, else
        ``split``, None: test, validation or val)."""
        split = option(options, "train_split") if train else self.split or option(options, "split")
        limit = option(options, "max_train_examples" if train else "max_examples")
        return tfds_classification(self, split, train, option(options, "data_dir"), download, limit)

    def retrieval(self, options, download: bool = False):
        captions = option(options, "captions_per_image", 5) or None  # 0: all
        return tfds_retrieval(self, self.split or option(options, "split"),
                              option(options, "data_dir"), download,
                              option(options, "max_examples"), captions)

    def labelled_examples(self, options) -> tf.data.Dataset:
        """The fit split (``train_split``, None: train; at most ``max_train_examples``) with its
        images undecoded. Never downloads."""
        import tensorflow_datasets as tfds
        split = option(options, "train_split") or "train"
        try:
            ds = self.builder(option(options, "data_dir")).as_dataset(
                split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()})
        except AssertionError as e:  # TFDS' "could not find data in ...": never downloads here
            raise FileNotFoundError(
                f"TFDS set {self.dataset} is not prepared (`tfds build {self.dataset}`, with "
                f"--data_dir as eval.data_dir): {str(e).strip().splitlines()[0][:200]}") from None
        ds = ds.map(lambda ex: {"image/encoded": ex["image"], "label": ex["label"]})
        limit = option(options, "max_train_examples")
        return ds.take(limit) if limit else ds

    # ------------------------------------------------------------------------------ training

    def training_split(self, data) -> str:
        return self.split or data.get("tfds_split", "") or "train"

    def validate(self, data) -> None:
        """The set is known to TFDS, prepared in ``data.tfds_data_dir`` and has the split."""
        import tensorflow_datasets as tfds
        check_vocabulary(data, self.spec)
        split = self.training_split(data)
        try:
            tfds_captions.encoded_split(self.dataset, split, data.tfds_data_dir or None)
        except tfds.core.registered.DatasetNotFoundError as e:
            raise ValueError(f"data.name={self.spec!r}: unknown TFDS dataset "
                             f"({str(e).strip().splitlines()[0]})") from None
        except (ValueError, AssertionError) as e:  # an unknown split; not prepared (no download)
            where = "" if self.split else f"data.tfds_split={split!r}, "  # the split's field
            raise ValueError(f"data.name={self.spec!r}, {where}"
                             f"data.tfds_data_dir={data.tfds_data_dir!r}: "
                             f"{str(e).strip().splitlines()[0]}") from None

    def training_stream(self, config, layout, first_batch, input_context=None, stats=None):
        d = config.data
        return tfds_captions.training_stream(self.dataset, self.training_split(d), config.seed,
                                             layout, first_batch, d.shuffle_buffer,
                                             d.tfds_data_dir or None)


def tfds_kind(info, label_key: str) -> str:
    """``RETRIEVAL`` for a captioned set, ``CLASSIFICATION`` for a labelled one."""
    features = info.features
    keys = set(features.keys())
    if "captions" in keys or "caption" in keys:
        return RETRIEVAL
    if label_key in keys and hasattr(features[label_key], "names"):
        return CLASSIFICATION
    raise UnknownSourceError(f"TFDS dataset {info.name!r} has neither a {label_key!r} class "
                             f"label nor captions (features: {sorted(keys)})")


def default_split(info, train: bool = False) -> str:
    """``train`` for fitting (kNN, linear probe); for testing the first of test/validation/val."""
    splits = set(info.splits.keys()) if info.splits else set()
    if train:
        return "train"
    for split in ("test", "validation", "val"):
        if split in splits:
            return split
    return "test"


def _load(source: TfdsSource, split: str | None, train: bool, data_dir: str | None,
          download: bool, max_examples: int | None) -> tf.data.Dataset:
    """Loads a split (preparing it first if ``download``); ``split=None`` picks the default only
    now, because a dataset's split names are known once it is prepared (ImageNet: no test)."""
    builder = source.builder(data_dir)
    if download:
        builder.download_and_prepare()
    ds = builder.as_dataset(split=split or default_split(builder.info, train), shuffle_files=False)
    return ds.take(max_examples) if max_examples else ds


def tfds_classification(source: TfdsSource, split: str | None = None, train: bool = False,
                        data_dir: str | None = None, download: bool = True,
                        max_examples: int | None = None, image_key: str = "image",
                        label_key: str = "label") -> ClassificationData:
    """A classification split; class names from ``prompts`` (CIFAR, ImageNet) or TFDS.
    ``split`` None: ``train`` if ``train`` else test, validation or val (the first that exists)."""
    info = source.info(data_dir)
    if tfds_kind(info, label_key) != CLASSIFICATION:
        raise ValueError(f"{source.spec} is a captioned dataset, not a classification one")
    classnames = prompts.get_classnames(source.prompt_name, info, label_key)

    def make(image_size):
        ds = _load(source, split, train, data_dir, download, max_examples)
        return ds.map(lambda ex: {"image": ex[image_key], "label": tf.cast(ex[label_key], tf.int64)})

    return ClassificationData(f"{source.dataset}/{split or ('train' if train else 'test')}", make,
                              classnames)


def tfds_retrieval(source: TfdsSource, split: str | None = None, data_dir: str | None = None,
                   download: bool = True, max_images: int | None = None,
                   captions_per_image: int | None = 5, image_key: str = "image") -> RetrievalData:
    """A captioned split (``captions/text`` as in ``coco_captions``, or ``caption``)."""
    if tfds_kind(source.info(data_dir), "label") != RETRIEVAL:
        raise ValueError(f"{source.spec} has no captions; retrieval needs a captioned dataset")

    def make(image_size):
        ds = _load(source, split, False, data_dir, download, max_images)
        return ds.map(lambda ex: {"image": ex[image_key],
                                  "captions": tfds_captions.captions_of(ex)})

    return RetrievalData(f"{source.dataset}/{split or 'test'}", make, captions_per_image)
