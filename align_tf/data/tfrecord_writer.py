"""Writing TFRecord shards of (image, alt-text) pairs in the corpus format ``align_tf.data.tfrecord``
reads: serialised ``tf.train.Example`` records and the shard naming shared by every writer.

The Beam builder (``align_tf.corpus``) writes corpora with ``make_example`` and ``shard_name``;
``write_pairs`` is the small single-process writer for tests, benchmarks and converted TFDS sets.
``align_tf.data.tfrecord`` re-exports all three.
"""

from __future__ import annotations

import posixpath
from typing import Iterable

import tensorflow as tf


def _bytes_feature(values) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _int_feature(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def make_example(image_bytes: bytes, caption: str | bytes, id: str | None = None,
                 width: int | None = None, height: int | None = None) -> bytes:
    """A serialised ``tf.train.Example`` in the shard format (``id``/size optional).

    Serialised deterministically: a plain ``SerializeToString()`` orders the feature map by a
    per-process hash seed, so two processes (re-runs, Beam workers) would write different bytes
    for the same example."""
    caption = caption.encode("utf-8") if isinstance(caption, str) else caption
    feature = {"image/encoded": _bytes_feature([image_bytes]), "caption": _bytes_feature([caption])}
    if id is not None:
        feature["id"] = _bytes_feature([id.encode("utf-8")])
    if width is not None and height is not None:
        feature["image/width"] = _int_feature([width])
        feature["image/height"] = _int_feature([height])
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(
        deterministic=True)


def shard_name(output_prefix: str, index: int, num_shards: int) -> str:
    """``PREFIX-00003-of-00016.tfrecord``: the naming of every shard writer here."""
    return f"{output_prefix}-{index:05d}-of-{num_shards:05d}.tfrecord"


def write_pairs(pairs: Iterable, output_prefix: str, num_shards: int = 1) -> list:
    """Writes ``(image_bytes, caption)`` pairs (or serialised Examples) round-robin into shards.

    A small single-process writer for tests, benchmarks and converted TFDS sets; corpora go
    through the Beam builder (``align_tf.corpus.build``). Returns the shard paths.
    """
    tf.io.gfile.makedirs(posixpath.dirname(output_prefix) or ".")
    paths = [shard_name(output_prefix, i, num_shards) for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    try:
        for i, pair in enumerate(pairs):
            record = pair if isinstance(pair, bytes) else make_example(*pair)
            writers[i % num_shards].write(record)
    finally:
        for w in writers:
            w.close()
    return paths
