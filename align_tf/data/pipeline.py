"""tf.data input pipeline: (image, alt-text) pairs → batches the dual encoder trains on.

Training images follow the paper (§5): resize to ``resize_size`` then random-crop ``image_size`` and
random horizontal flip; evaluation resizes and centre-crops. Text is tokenized inside the pipeline by
the model's own ``TextPreprocessor`` so training and export share one tokenizer.
"""

from __future__ import annotations

import tensorflow as tf


def preprocess_image(image, image_size: int, resize_size: int | None = None, training: bool = False,
                     seed=None):
    """uint8/float image ``(H, W, 3)`` → float32 ``(image_size, image_size, 3)`` in [0, 1]."""
    image = tf.image.convert_image_dtype(image, tf.float32)
    if resize_size is None or resize_size == image_size:
        return tf.image.resize(image, (image_size, image_size), antialias=True) \
            if image.shape[0] != image_size or image.shape[1] != image_size else image
    image = tf.image.resize(image, (resize_size, resize_size), antialias=True)
    if training:
        image = tf.image.random_crop(image, (image_size, image_size, 3), seed=seed)
    else:
        offset = (resize_size - image_size) // 2
        image = tf.image.crop_to_bounding_box(image, offset, offset, image_size, image_size)
    return tf.clip_by_value(image, 0.0, 1.0)


def batch_pairs(dataset: tf.data.Dataset, preprocessor, batch_size: int, image_size: int,
                resize_size: int | None = None, training: bool = True, shuffle_buffer: int = 10_000,
                seed: int | None = None, flip: bool = True,
                skip_examples: int = 0) -> tf.data.Dataset:
    """Turns a dataset of ``{"image", "caption"}`` into batches of ``{"image", "text"}``.

    Training batches are shuffled (seeded, so the order is reproducible), repeated and
    ``drop_remainder`` (static shapes for XLA/TPU). ``skip_examples`` drops that many examples of
    the shuffled stream before any decoding work: a resumed run passes the number already trained on.
    """
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed).repeat()
        if skip_examples:
            dataset = dataset.skip(skip_examples)

    def prepare(example):
        image = preprocess_image(example["image"], image_size, resize_size, training, seed)
        if training and flip:
            image = tf.image.random_flip_left_right(image, seed=seed)
        return {"image": image, "caption": example["caption"]}

    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=training)
    dataset = dataset.map(lambda b: {"image": b["image"], "text": preprocessor(b["caption"])},
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
