"""``img2dataset_tfrecord:GLOB``: img2dataset's TFRecord shards (``jpg`` + ``txt``), read as they
are (no rebuild, no filters), for training pairs and retrieval, exactly as ``tfrecord:GLOB``."""

from __future__ import annotations

from align_tf.data import img2dataset
from align_tf.data.sources.registry import register_source
from align_tf.data.sources.tfrecord import TFRecordSource


@register_source("img2dataset_tfrecord")
class Img2datasetSource(TFRecordSource):
    """img2dataset's shards: ours with other feature names."""

    keys = img2dataset.KEYS
