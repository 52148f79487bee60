"""img2dataset's TFRecord output (``--output_format=tfrecord``): its feature names, and its shards
read as samples for the corpus builder.

Each record is a ``tf.train.Example`` with ``key`` (the sample id), ``jpg`` (the image bytes, in
img2dataset's ``--encode_format``), ``txt`` (the caption) and img2dataset's metadata (``url``,
``width``, ``height``, ``sha256``, ...). Training reads these shards as they are
(``config.data.name=img2dataset_tfrecord:GLOB``, ``tfrecord.read_training_pairs`` with ``KEYS``);
the builder (``align_tf.data.build --format=img2dataset_tfrecord``) filters them into our shards.
"""

from __future__ import annotations

import logging
from typing import Iterator

from align_tf.data.webdataset import Sample

log = logging.getLogger(__name__)

KEY, IMAGE, CAPTION, URL = "key", "jpg", "txt", "url"
KEYS = (IMAGE, CAPTION)  # (image, caption) features, as tfrecord.parse_record takes them


def _bytes(features, name: str) -> bytes | None:
    if name not in features or not features[name].bytes_list.value:
        return None
    return features[name].bytes_list.value[0]


def read_samples(path: str) -> Iterator:
    """Yields the ``webdataset.Sample``\\ s of one img2dataset TFRecord shard, then ``None`` if its
    framing is damaged (CRC mismatch, file cut short: the rest of the file is lost, uncounted).

    A record that is not an ``Example`` is a ``"corrupt_member"`` sample; a missing or empty
    ``jpg``/``txt`` leaves ``image``/``caption`` ``None``.
    """
    import tensorflow as tf
    from google.protobuf.message import DecodeError
    records = iter(tf.data.TFRecordDataset(path))
    index = 0
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except tf.errors.OpError as e:  # DataLossError (bad CRC, truncated), unreadable file
            log.warning("%s: damaged after %d records (%s)", path, index, str(e).splitlines()[0])
            yield None
            return
        index += 1
        try:
            features = tf.train.Example.FromString(record.numpy()).features.feature
        except DecodeError:
            yield Sample(f"{path}#{index}", error="corrupt_member")
            continue
        key = _bytes(features, KEY)
        sample = Sample(key.decode("utf-8", "replace") if key else f"{path}#{index}",
                        image=_bytes(features, IMAGE) or None)
        caption, url = _bytes(features, CAPTION), _bytes(features, URL)
        try:
            sample.caption = caption.decode("utf-8") if caption is not None else None
        except UnicodeDecodeError:
            sample.error = "corrupt_member"
        sample.url = url.decode("utf-8", "replace") if url else None
        yield sample
