"""TFRecord shards of (image, alt-text) pairs: the on-disk corpus format.

Each record is a ``tf.train.Example`` with ``image/encoded`` (JPEG/PNG bytes) and ``caption``
(UTF-8 alt-text).
"""

from __future__ import annotations

import tensorflow as tf

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "caption": tf.io.FixedLenFeature([], tf.string),
}


def read_pairs(pattern: str, shuffle_files: bool = True, seed: int | None = None,
               input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """Decoded ``{"image": uint8 (H, W, 3), "caption": string}`` from shards matching ``pattern``."""
    files = tf.io.gfile.glob(pattern)
    if not files:
        raise FileNotFoundError(f"No TFRecord files match {pattern!r}.")
    ds = tf.data.Dataset.from_tensor_slices(sorted(files))
    if input_context is not None:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if shuffle_files:
        ds = ds.shuffle(len(files), seed=seed)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=tf.data.AUTOTUNE,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def parse(record):
        ex = tf.io.parse_single_example(record, FEATURES)
        image = tf.io.decode_image(ex["image/encoded"], channels=3, expand_animations=False)
        return {"image": image, "caption": ex["caption"]}

    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
