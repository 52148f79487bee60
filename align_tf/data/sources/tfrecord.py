"""``tfrecord:GLOB``: our ``tf.train.Example`` shards (``align_tf.data.build``: ``image/encoded``
+ ``caption``), for training pairs and retrieval.

Training reads them at full speed and resumes exactly, re-reading at most one group of shards
(``tfrecord.read_training_pairs``); shards without the builder's ``stats.json`` are counted once
at start-up. Retrieval: records with byte-identical images are one image with several captions,
so a caption set written one pair per record (MSCOCO's 5 per image) keeps the 5-caption protocol;
a record may also hold several ``caption`` values. Corrupt data is skipped as training skips it:
an image that does not decode, and a record that does not parse or has no caption, are left out
and counted (``RetrievalData.skipped_counts``); a shard whose framing is damaged is read up to the
damage, with a logged warning. ``GLOB`` may be a comma list of globs.
"""

from __future__ import annotations

import hashlib
import logging

import tensorflow as tf

from align_tf.data import tfrecord
from align_tf.data.sources.base import PAIRS, RETRIEVAL, Source, option
from align_tf.data.sources.collections import RetrievalData
from align_tf.data.sources.registry import register_source

log = logging.getLogger(__name__)


@register_source("tfrecord")
class TFRecordSource(Source):
    """Shards of captioned images matching a glob; ``keys``: their (image, caption) features."""

    takes_argument = True
    argument_name = "GLOB"
    keys = tfrecord.KEYS

    def kinds(self, options=None) -> set:
        return {PAIRS, RETRIEVAL}

    def validate(self, data) -> None:
        super().validate(data)
        patterns = [p.strip() for p in self.argument.split(",") if p.strip()]
        if not any(tf.io.gfile.glob(p) for p in patterns):
            raise ValueError(f"data.name={self.spec!r}: the glob matches no files")

    def training_stream(self, config, layout, first_batch, input_context=None, stats=None):
        return tfrecord.read_training_pairs(
            self.argument, config.seed, layout, first_batch,
            shuffle_buffer=config.data.shuffle_buffer, input_context=input_context, stats=stats,
            keys=self.keys)

    def retrieval(self, options, download: bool = False):
        captions = option(options, "captions_per_image", 5) or None  # 0: all
        return tfrecord_retrieval(self.argument, option(options, "max_examples"), captions,
                                  self.keys, self.spec)


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

    def make(image_size):
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
