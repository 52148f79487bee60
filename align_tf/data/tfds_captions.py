"""Captioned image sets from TensorFlow Datasets (``coco_captions`` and the like).

Two shapes of the same data:

* ``caption_pairs``: one ``{"image", "caption"}`` per caption, the training/fine-tuning form
  (the paper fine-tunes on MSCOCO with the same loss); feeds ``pipeline.batch_pairs`` directly.
* ``grouped_captions``: one ``{"image", "captions": string (5,)}`` per image, the retrieval
  protocol's form (MSCOCO/Flickr30K images have 5 captions; an image→text query hits if any of its
  captions is retrieved). COCO has 5–7 captions per image; the first 5 are kept, as is standard.

``coco_captions`` in TFDS is the Karpathy split: ``train`` (+ ``restval``) for training,
``val``/``test`` 5k images each (``test`` is the ALIGN/CLIP "MSCOCO 5K" set). Preparing it
downloads ~20 GB from cocodataset.org the first time (``download=True``); point ``data_dir`` at
an existing TFDS directory to reuse a prepared copy. ``python -m align_tf.data.tfds_captions``
writes a split as TFRecord shards of our corpus format, so the trainer can fine-tune on it
(``--config.data.name=tfrecord``).
"""

from __future__ import annotations

import argparse
import logging

import tensorflow as tf

log = logging.getLogger(__name__)


def _captions_of(example):
    """The caption strings of a TFDS example: ``captions/text`` (COCO) or ``caption``."""
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
    def per_caption(example):
        captions = _captions_of(example)
        images = tf.data.Dataset.from_tensors(example[image_key]).repeat(tf.size(captions, out_type=tf.int64))
        return tf.data.Dataset.zip({"image": images,
                                    "caption": tf.data.Dataset.from_tensor_slices(captions)})

    return load_split(name, split, **load_kwargs).flat_map(per_caption)


def grouped_captions(name: str = "coco_captions", split: str = "test",
                     captions_per_image: int = 5, image_key: str = "image",
                     **load_kwargs) -> tf.data.Dataset:
    """One ``{"image", "captions": string (captions_per_image,)}`` per image, in TFDS order.

    Images with fewer than ``captions_per_image`` captions are left out (none in COCO) so every
    element has the same static shape, ready for ``batch``.
    """
    def first_n(example):
        return {"image": example[image_key], "captions": _captions_of(example)[:captions_per_image]}

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


def main(argv=None) -> int:
    """``python -m align_tf.data.tfds_captions --name=coco_captions --split=train --output_dir=D``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m align_tf.data.tfds_captions",
                                     description="Export a TFDS captioned split as TFRecord shards.")
    parser.add_argument("--name", default="coco_captions", help="TFDS dataset name")
    parser.add_argument("--split", default="train", help="TFDS split, e.g. train, train+restval")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_shards", type=int, default=16)
    parser.add_argument("--data_dir", default=None, help="TFDS data directory")
    parser.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                        help="download and prepare the dataset if needed")
    args = parser.parse_args(argv)
    prefix = tf.io.gfile.join(args.output_dir, args.split.replace("+", "_"))
    return export_pairs(args.name, args.split, prefix, args.num_shards, data_dir=args.data_dir,
                        download=args.download)


if __name__ == "__main__":
    main()
