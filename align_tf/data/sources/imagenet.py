"""``imagenet:NAME[/split]``: ImageNet or one of its shifted variants (TFDS ``imagenet2012``,
``imagenet_r``, ``imagenet_a``, ``imagenet_v2``, ``imagenet_sketch``) scored as CLIP and ALIGN
(Table 4) score them.

A TFDS set (``sources/tfds.py``) with the variants' protocol:

* class names: CLIP's 1,000 ImageNet names (``prompts.IMAGENET_CLASSNAMES``) for every variant,
  whose TFDS labels are ImageNet-1k label indices;
* ImageNet-R and ImageNet-A cover 200 of the 1,000 classes and are scored over those 200 only
  (``align_tf.data.imagenet_variants``: the published class lists): the class names are the 200,
  labels are renumbered 0–199 in label order, and an image of another class (none in the
  published sets) is left out;
* the split: ImageNet's ``validation`` (its TFDS ``test`` has no labels), the others' ``test``.

``--dataset=imagenet_variants`` is the five of them (``imagenet_variants.expand_datasets``);
results are keyed by the TFDS name (``results["imagenet_r"]["zeroshot"]["top1"]``).
``imagenet2012`` needs its archives in TFDS' manual directory first (docs/robustness.md); the
others download with ``align_tf.evaluate --download``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from align_tf import prompts
from align_tf.data import imagenet_variants
from align_tf.data.sources.base import option
from align_tf.data.sources.collections import ClassificationData
from align_tf.data.sources.registry import UnknownSourceError, register_source
from align_tf.data.sources.tfds import TfdsSource, tfds_classification


@register_source("imagenet")
class ImagenetSource(TfdsSource):
    """ImageNet or a shifted variant of it (``imagenet:imagenet_r``), on its test split; spelt
    as ``tfds:`` is (``NAME[/split]``)."""

    def __init__(self, argument: str = ""):
        super().__init__(argument)
        if self.prompt_name not in imagenet_variants.VARIANTS:
            raise UnknownSourceError(f"imagenet:{argument}: not an ImageNet variant; choose from "
                                     f"{', '.join(imagenet_variants.VARIANTS)}")

    def classification(self, options, train: bool = False, download: bool = False):
        """The test split (the spec's, else ``split``, else ``TEST_SPLITS``) or the fit split
        (``train_split``, None: train), restricted to the variant's classes."""
        name = self.prompt_name
        if train:
            split = option(options, "train_split") or "train"
        else:
            split = self.split or option(options, "split") or imagenet_variants.TEST_SPLITS[name]
        limit = option(options, "max_train_examples" if train else "max_examples")
        data = tfds_classification(self, split, train, option(options, "data_dir"), download,
                                   limit)
        label_names = self.info(option(options, "data_dir")).features["label"].names
        return restrict(data, imagenet_variants.class_indices(name, label_names))


def restrict(data: ClassificationData, indices) -> ClassificationData:
    """``data`` with CLIP's ImageNet class names, scored over the classes ``indices`` (ImageNet-1k
    label indices; None: all 1,000): labels renumbered to positions in ``indices``, images of
    other classes left out."""
    names = prompts.IMAGENET_CLASSNAMES
    if indices is None:
        return ClassificationData(data.name, data.examples, names)
    position = np.full(len(names), -1, np.int64)
    position[np.asarray(indices)] = np.arange(len(indices))
    position = tf.constant(position)

    def make(image_size):
        ds = data.examples(image_size).map(
            lambda ex: dict(ex, label=tf.gather(position, ex["label"])))
        return ds.filter(lambda ex: ex["label"] >= 0)

    return ClassificationData(data.name, make, [names[i] for i in indices])
