r"""Captioned image sets from TensorFlow Datasets (``coco_captions`` and the like).

Three shapes of the same data:

* ``caption_pairs``: one ``{"image", "caption"}`` per caption, the training/fine-tuning form
  (the paper fine-tunes on MSCOCO with the same loss); feeds ``pipeline.batch_pairs`` directly.
* ``training_stream``: the trainer's endless stream (``config.data.name=tfds:NAME[/split]``): one
  random caption per image per epoch, deterministic per ``(seed, epoch)``, exact resume.
* ``grouped_captions``: one ``{"image", "captions": string (5,)}`` per image, the retrieval
  protocol's form (MSCOCO/Flickr30K images have 5 captions; an image→text query hits if any of its
  captions is retrieved). COCO has 5–7 captions per image; the first 5 are kept, as is standard.

``coco_captions`` in TFDS is the Karpathy split: ``train`` (+ ``restval``) for training,
``val``/``test`` 5k images each (``test`` is the ALIGN/CLIP "MSCOCO 5K" set). Preparing it
downloads ~20 GB from cocodataset.org the first time (``download=True``); point ``data_dir`` at
an existing TFDS directory to reuse a prepared copy. The command line writes a split as TFRecord
shards of our corpus format (``{output_dir}/{split}-00000-of-00016.tfrecord``), so the trainer can
fine-tune on it (``--config.data.name=tfrecord:coco_train/*.tfrecord``):

    python -m align_tf.data.tfds_captions --dataset=coco_captions --split=train+restval \
        --output_dir=coco_train --data_dir=/data/tfds --nodownload

Its flags are spelt as in ``align_tf.evaluate`` (``--dataset`` a TFDS name, ``--split``,
``--data_dir``, ``--download``) and ``align_tf.data.build`` (``--output_dir``, ``--num_shards``,
``--jpeg_quality``); the older ``--name`` still works, with a warning.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, NoReturn

from absl import flags

from align_tf import cli

if TYPE_CHECKING:
    import tensorflow as tf

log = logging.getLogger(__name__)
PROG = "align_tf.data.tfds_captions"
_RENAMED = {"--name": "--dataset"}  # argparse-era spelling → today's (as align_tf.evaluate)
# TensorFlow is imported inside the functions, not at the top: --help and flag errors answer at once.


def captions_of(example):
    """The caption strings of a TFDS example: ``captions/text`` (COCO) or ``caption``."""
    import tensorflow as tf
    if "captions" in example:
        captions = example["captions"]
        return captions["text"] if isinstance(captions, dict) else captions
    return tf.reshape(example["caption"], [-1])


def load_split(name: str = "coco_captions", split: str = "train", data_dir: str | None = None,
               download: bool = True, shuffle_files: bool = False, seed: int | None = None,
               input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """A TFDS split as TFDS gives it; ``input_context`` gives each input pipeline its own files."""
    import tensorflow_datasets as tfds
    builder = tfds.builder(name, data_dir=data_dir)
    if download:
        builder.download_and_prepare()
    read_config = tfds.ReadConfig(shuffle_seed=seed, input_context=input_context)
    return builder.as_dataset(split=split, shuffle_files=shuffle_files, read_config=read_config)


def caption_pairs(name: str = "coco_captions", split: str = "train", image_key: str = "image",
                  **load_kwargs) -> tf.data.Dataset:
    """One ``{"image": uint8 (H, W, 3), "caption": string}`` per caption of every image.

    ``load_kwargs`` go to ``load_split`` (``data_dir``, ``download``, ``shuffle_files``, ``seed``,
    ``input_context``).
    """
    import tensorflow as tf

    def per_caption(example):
        captions = captions_of(example)
        images = tf.data.Dataset.from_tensors(example[image_key]).repeat(tf.size(captions, out_type=tf.int64))
        return tf.data.Dataset.zip({"image": images,
                                    "caption": tf.data.Dataset.from_tensor_slices(captions)})

    return load_split(name, split, **load_kwargs).flat_map(per_caption)


# Purpose word of the caption draws (after sampling's RECORDS, SHARDS, SHUFFLE, AUGMENT).
_CAPTIONS = 16


def encoded_split(name: str, split: str, data_dir: str | None = None, image_key: str = "image"):
    """``(builder, dataset)``: a prepared TFDS split in file order with its images still encoded
    (``SkipDecoding``). Lazy, so also the check that the set is prepared and has the split:
    raises ``DatasetNotFoundError``/``ValueError``/``AssertionError`` (not prepared) otherwise."""
    import tensorflow_datasets as tfds
    builder = tfds.builder(name, data_dir=data_dir)
    return builder, builder.as_dataset(split=split, shuffle_files=False,
                                       decoders={image_key: tfds.decode.SkipDecoding()})


def _num_examples(builder, split: str, dataset) -> int:
    """Images in ``split``: TFDS's recorded count, else (mock data, no metadata) counted."""
    if builder.info.splits:
        return int(builder.info.splits[split].num_examples)
    return int(dataset.reduce(0, lambda n, _: n + 1))


def training_stream(name: str, split: str, seed: int, layout, first_batch: int = 0,
                    shuffle_buffer: int = 10_000, data_dir: str | None = None,
                    image_key: str = "image") -> tf.data.Dataset:
    """The endless training stream of one input pipeline over a TFDS captioned split, from global
    batch ``first_batch`` on: ``{"image/encoded", "caption", "position"}`` (``sampling``'s layout).

    Epoch ``e`` visits every image of ``split`` once (``split`` may combine splits:
    ``train+restval``), with one of its captions drawn from ``(seed, e, image)``: the fine-tuning
    form of a 5-caption set, each caption seen once per five epochs on average. Order: TFDS's file
    order (TFDS stores examples hash-shuffled), permuted within windows of ``shuffle_buffer``
    images by a stateless shuffle keyed by ``(seed, e, window)``. Images stay encoded here
    (``SkipDecoding``) and are decoded by ``pipeline.batch_pairs``, after the pipeline's slice
    is taken. Images without a caption get ``""``.

    Every pipeline reads the same global stream and keeps its slice of each global batch, so the
    stream does not depend on the number of hosts (each host reads the whole split: meant for
    fine-tuning sets such as COCO, not for web-scale corpora, which go through TFRecord shards).
    Resuming is exact: the stream starts in ``first_batch``'s epoch, skipping the records before
    its window undecoded (at most one epoch's records are read and dropped).

    Args:
      name: the TFDS dataset (optionally ``name/config:version``); never downloaded here.
      split: TFDS split spec.
      seed: the run's seed.
      layout: the pipeline's slice of each global batch (``sampling.Layout``).
      first_batch: the global batch to start at (a resumed run's ``batches_done``).
      shuffle_buffer: images per shuffle window.
      data_dir: TFDS data directory.
      image_key: the image feature.
    """
    import tensorflow as tf

    from align_tf.data import sampling
    builder, records = encoded_split(name, split, data_dir, image_key)
    num_images = _num_examples(builder, split, records)
    if num_images < 1:
        raise ValueError(f"TFDS {name}/{split} holds no examples")
    window = min(shuffle_buffer, num_images)
    start = first_batch * layout.global_batch  # the global stream's first position
    first_epoch, offset = divmod(start, num_images)
    first_window = offset // window

    def epoch_pairs(epoch):
        skip_windows = tf.where(epoch == first_epoch, tf.constant(first_window, tf.int64),
                                tf.constant(0, tf.int64))

        def one_caption(index, example):
            captions = captions_of(example)
            n = tf.size(captions, out_type=tf.int64)
            draw = tf.random.stateless_uniform(
                [], sampling.stream_key(seed, _CAPTIONS, epoch, index), minval=0,
                maxval=tf.maximum(n, 1), dtype=tf.int64)
            caption = tf.cond(n > 0, lambda: tf.gather(captions, draw), lambda: tf.constant(""))
            return example[image_key], caption

        def shuffle_window(w, pairs):
            key = sampling.stream_key(seed, sampling.SHUFFLE, epoch, w)
            order = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(pairs[0])[0]), key)
            return tuple(tf.gather(part, order) for part in pairs)

        ds = records.enumerate().skip(skip_windows * window).map(
            one_caption, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        # The next window is read while this one is consumed: no stall at window boundaries.
        return ds.batch(window).enumerate(skip_windows).map(shuffle_window).prefetch(1).unbatch()

    ds = tf.data.Dataset.counter(first_epoch).flat_map(epoch_pairs)
    ds = ds.skip(offset - first_window * window).enumerate(start)

    def mine(position, pair):
        return (position % layout.global_batch) // layout.per_pipeline == layout.pipeline_id

    def as_example(position, pair):
        return {"image/encoded": pair[0], "caption": pair[1], "position": position}

    return ds.filter(mine).map(as_example)


def grouped_captions(name: str = "coco_captions", split: str = "test",
                     captions_per_image: int = 5, image_key: str = "image",
                     **load_kwargs) -> tf.data.Dataset:
    """One ``{"image", "captions": string (captions_per_image,)}`` per image, in TFDS order.

    Images with fewer than ``captions_per_image`` captions are left out (none in COCO) so every
    element has the same static shape, ready for ``batch``.
    """
    import tensorflow as tf

    def first_n(example):
        return {"image": example[image_key], "captions": captions_of(example)[:captions_per_image]}

    def enough(example):
        return tf.size(example["captions"]) >= captions_per_image

    def fix_shape(example):
        return {"image": example["image"],
                "captions": tf.ensure_shape(example["captions"], [captions_per_image])}

    return load_split(name, split, **load_kwargs).map(first_n).filter(enough).map(fix_shape)


def export_pairs(name: str, split: str, output_prefix: str, num_shards: int = 16,
                 jpeg_quality: int = 95, **load_kwargs) -> int:
    """Writes ``caption_pairs`` as our TFRecord shards (JPEG re-encoded); returns the pair count.

    Each image is written once per caption, so its captions share byte-identical image bytes:
    ``align_tf.evaluate --dataset=tfrecord:GLOB`` groups them back into one image.
    """
    import tensorflow as tf

    from align_tf.data import tfrecord

    def encode(example):
        return tf.io.encode_jpeg(example["image"], quality=jpeg_quality), example["caption"]

    pairs = caption_pairs(name, split, **load_kwargs).map(encode, num_parallel_calls=tf.data.AUTOTUNE)
    count = 0

    def numpy_pairs():
        nonlocal count
        for image, caption in pairs.as_numpy_iterator():
            count += 1
            if count % 10_000 == 0:
                log.info("exported %d pairs", count)
            yield image, caption

    tfrecord.write_pairs(numpy_pairs(), output_prefix, num_shards)
    log.info("exported %d pairs of %s/%s to %s-*", count, name, split, output_prefix)
    return count


def _error(message) -> NoReturn:
    cli.error(cli.program(PROG), message)


def _define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_string("dataset", "coco_captions", "TFDS dataset name.", flag_values=flag_values)
    flags.DEFINE_string("split", "train", "TFDS split, e.g. train, train+restval, "
                        "'train[:10%]'.", flag_values=flag_values)
    flags.DEFINE_string("output_dir", None, "Where the TFRecord shards go (required).",
                        flag_values=flag_values)
    flags.DEFINE_integer("num_shards", 16, "Number of output TFRecord shards.", lower_bound=1,
                         flag_values=flag_values)
    flags.DEFINE_integer("jpeg_quality", 95, "JPEG quality of the re-encoded images.",
                         lower_bound=1, upper_bound=100, flag_values=flag_values)
    flags.DEFINE_string("data_dir", None, "TFDS data directory.", flag_values=flag_values)
    flags.DEFINE_bool("download", True, "Let TFDS download and prepare the dataset if needed.",
                      flag_values=flag_values)


_PARSE = dict(required=("output_dir",), renamed=_RENAMED)  # --no-download works too (cli.parse)


def parse_args(argv: list | None = None) -> flags.FlagValues:
    """``cli.parse_args`` with this command's flags (e.g. for calling ``main`` in-process)."""
    return cli.parse_args(PROG, argv, _define_flags, **_PARSE)


def main(argv: list, flag_values: flags.FlagValues | None = None) -> None:
    """absl main; ``flag_values``: parsed flags (default absl's ``FLAGS``, as ``run`` sets them)."""
    del argv  # cli.parse rejected positional arguments
    import tensorflow as tf
    f = flags.FLAGS if flag_values is None else flag_values
    # File names from the split: "train+restval" -> train_restval, "train[:10%]" -> train_10_.
    prefix = tf.io.gfile.join(f.output_dir, re.sub(r"[^\w.-]+", "_", f.split))
    try:  # now, not after a long download
        tf.io.gfile.makedirs(f.output_dir)
    except Exception as e:  # tf.errors.OpError (permission, unknown scheme) is not an OSError
        _error(f"cannot create --output_dir {f.output_dir}: {e}")
    try:
        count = export_pairs(f.dataset, f.split, prefix, f.num_shards, f.jpeg_quality,
                             data_dir=f.data_dir, download=f.download)
    except (ValueError, AssertionError) as e:
        # TFDS's user-facing errors: an unknown dataset (a ValueError whose later lines list every
        # dataset), an unknown split, or --nodownload without prepared data (AssertionError).
        _error(str(e).strip().split("\n", 1)[0])
    print(f"exported {count} pairs of {f.dataset}/{f.split} to {prefix}-*.tfrecord")


def run() -> None:
    """``python -m align_tf.data.tfds_captions``."""
    _define_flags(flags.FLAGS)
    cli.run(__name__, main, **_PARSE)


if __name__ == "__main__":
    run()
