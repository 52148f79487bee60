"""Where training and evaluation data come from: one grammar for ``config.data.name`` and the
evaluate CLI's ``--dataset``.

Training (``config.data.name``; the stream and its resume are ``sampling``'s: global positions,
per-pipeline slices, per-example augmentation seeds):

  ``synthetic``             the built-in corpus; random access, so resume is exact and O(1).
  ``tfrecord``              our shards (``align_tf.data.build``) matching ``data.train_pattern``.
  ``img2dataset_tfrecord``  img2dataset's TFRecord shards (``key``/``jpg``/``txt``) matching
                            ``data.train_pattern``, read as they are (no rebuild, no filters).
                            Both TFRecord sources resume exactly, re-reading at most one group of
                            shards (``tfrecord.read_training_pairs``); shards without the
                            builder's ``stats.json`` are counted once at start-up.
  ``tfds:NAME``             a TFDS captioned set (``coco_captions``), split ``data.tfds_split``
                            (``train+restval`` works), from ``data.tfds_data_dir``; one random
                            caption per image per epoch; exact resume that reads (undecoded) at
                            most one epoch (``tfds_captions.training_stream``). Never downloads:
                            prepare it first (``tfds build`` or ``align_tf.evaluate --download``).

Webdataset tars are converted first (``align_tf.data.build --format=webdataset``): the builder
applies the paper's filters and writes shards the trainer reads at full speed.

Evaluation (``--dataset``, ``eval.datasets``): ``synthetic``, ``tfrecord:GLOB``,
``img2dataset_tfrecord:GLOB`` and ``tfds:NAME`` (a bare TFDS name, ``cifar10``, still works).
"""

from __future__ import annotations

import tensorflow as tf

from align_tf.data import img2dataset, tfrecord

SYNTHETIC, TFRECORD, IMG2DATASET_TFRECORD, TFDS = (
    "synthetic", "tfrecord", "img2dataset_tfrecord", "tfds")
TFDS_PREFIX = "tfds:"
TRAINING_NAMES = (SYNTHETIC, TFRECORD, IMG2DATASET_TFRECORD, TFDS_PREFIX + "NAME")
# The (image, caption) features of each TFRecord source.
RECORD_KEYS = {TFRECORD: tfrecord.KEYS, IMG2DATASET_TFRECORD: img2dataset.KEYS}


def parse(name: str) -> tuple:
    """``(kind, argument)`` of a source name: ``("tfds", "coco_captions")`` for
    ``tfds:coco_captions``, ``(name, "")`` otherwise. Raises ``ValueError`` naming the choices."""
    if name.startswith(TFDS_PREFIX) and name[len(TFDS_PREFIX):].strip():
        return TFDS, name[len(TFDS_PREFIX):].strip()
    if name in (SYNTHETIC, TFRECORD, IMG2DATASET_TFRECORD):
        return name, ""
    raise ValueError(f"unknown data.name {name!r}; choose from {', '.join(TRAINING_NAMES)}")


def check(data) -> None:
    """Raises ``ValueError`` with one line naming the ``data.*`` field that cannot work for the
    source ``data.name`` (``data``: the config's data section). Touches no data but globs."""
    kind, argument = parse(data.name)
    if kind == SYNTHETIC:
        return
    if not data.vocab_path:
        raise ValueError(f"data.vocab_path is required for data.name={data.name!r} (build one "
                         "with python -m align_tf.data.vocab)")
    if not tf.io.gfile.exists(data.vocab_path):
        raise ValueError(f"data.vocab_path {data.vocab_path} does not exist")
    if kind in RECORD_KEYS:
        if not any(tf.io.gfile.glob(p.strip()) for p in data.train_pattern.split(",") if p.strip()):
            raise ValueError(f"data.train_pattern {data.train_pattern!r} matches no files")
        return
    import tensorflow_datasets as tfds

    from align_tf.data import tfds_captions
    if not data.tfds_split:
        raise ValueError(f"data.tfds_split is required for data.name={data.name!r}")
    try:
        tfds_captions.encoded_split(argument, data.tfds_split, data.tfds_data_dir or None)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(f"data.name={data.name!r}: unknown TFDS dataset "
                         f"({str(e).strip().splitlines()[0]})") from None
    except (ValueError, AssertionError) as e:  # an unknown split; not prepared (no download here)
        raise ValueError(f"data.name={data.name!r}, data.tfds_split={data.tfds_split!r}, "
                         f"data.tfds_data_dir={data.tfds_data_dir!r}: "
                         f"{str(e).strip().splitlines()[0]}") from None


def training_stream(config, layout, first_batch: int,
                    input_context: tf.distribute.InputContext | None = None,
                    stats: tfrecord.ReadStats | None = None) -> tf.data.Dataset:
    """The input pipeline's endless stream of ``config.data.name`` (not ``synthetic``, whose
    pairs live in memory: ``sampling.sample_arrays``) from global batch ``first_batch`` on:
    unbatched ``{"image/encoded", "caption", "position", ...}`` for ``pipeline.batch_pairs``."""
    d = config.data
    kind, argument = parse(d.name)
    if kind in RECORD_KEYS:
        return tfrecord.read_training_pairs(
            d.train_pattern, config.seed, layout, first_batch, shuffle_buffer=d.shuffle_buffer,
            input_context=input_context, stats=stats, keys=RECORD_KEYS[kind])
    if kind == TFDS:
        from align_tf.data import tfds_captions
        return tfds_captions.training_stream(argument, d.tfds_split, config.seed, layout,
                                             first_batch, d.shuffle_buffer,
                                             d.tfds_data_dir or None)
    raise ValueError(f"data.name={d.name!r} has no file stream (synthetic pairs are in memory)")
