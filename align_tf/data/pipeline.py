"""tf.data input pipeline: (image, alt-text) pairs → batches the dual encoder trains on.

Training images follow the paper (§5): resize to ``resize_size`` then random-crop ``image_size`` and
random horizontal flip; evaluation resizes and centre-crops. Text is tokenized inside the pipeline by
the model's own ``TextPreprocessor`` so training and export share one tokenizer.

``batch_pairs`` takes decoded pairs (``{"image", "caption"}``) or encoded ones
(``{"image/encoded", "caption"}``, from ``tfrecord.read_pairs(..., decode=False)``); encoded
images are decoded after the shuffle, so the shuffle buffer holds compact JPEG bytes, and corrupt
ones are skipped and counted in ``tfrecord.STATS`` (see ``align_tf.data.tfrecord``).
"""

from __future__ import annotations

import tensorflow as tf

from align_tf.data import tfrecord


# Training crops resize only the crop window (preprocess_image); False: the whole image, then crop
# (the same augmentation, slower; benchmarks/bench_input_pipeline.py --before times it).
CROP_WINDOW_RESIZE = True


def preprocess_image(image, image_size: int, resize_size: int | None = None, training: bool = False,
                     seed=None):
    """uint8/float image ``(H, W, 3)`` → float32 ``(image_size, image_size, 3)`` in [0, 1].

    Training with ``resize_size > image_size``: a uniformly random ``image_size`` crop of the image
    resized (antialiased bilinear) to ``resize_size`` square. Only the crop window is computed: the
    same resize kernel (``ScaleAndTranslate``, as ``tf.image.resize(antialias=True)`` uses),
    translated by the crop offset, straight from the uint8 pixels. That equals resize-then-crop up
    to float rounding (~3e-5) at a fraction of the cost (the full 346 px resize was most of the
    per-image time). Evaluation resizes the whole image and centre-crops (``export`` matches it).
    """
    if CROP_WINDOW_RESIZE and training and resize_size is not None and resize_size > image_size:
        return _random_crop_of_resized(image, image_size, resize_size, seed)
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


def _random_crop_of_resized(image, image_size: int, resize_size: int, seed=None, offset=None):
    """``random_crop(resize(image, resize_size), image_size)`` computing only the crop window.

    ``offset``: the crop's ``(y, x)`` in resized pixels (default: uniform in
    ``[0, resize_size - image_size]`` each, like ``tf.image.random_crop``).
    """
    if offset is None:
        offset = tf.random.uniform((2,), maxval=resize_size - image_size + 1, dtype=tf.int32,
                                   seed=seed)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    if image.dtype == tf.uint8:
        scale = 1.0 / 255.0  # ScaleAndTranslate reads uint8 and returns float32
    else:
        image, scale = tf.image.convert_image_dtype(image, tf.float32), 1.0
    window = tf.raw_ops.ScaleAndTranslate(
        images=image[None], size=tf.constant([image_size, image_size]),
        scale=float(resize_size) / shape, translation=-tf.cast(offset, tf.float32),
        kernel_type="triangle", antialias=True)[0]
    return tf.clip_by_value(window * scale, 0.0, 1.0)


def batch_pairs(dataset: tf.data.Dataset, preprocessor, batch_size: int, image_size: int,
                resize_size: int | None = None, training: bool = True, shuffle_buffer: int = 10_000,
                seed: int | None = None, flip: bool = True,
                skip_examples: int = 0, stats: tfrecord.ReadStats | None = None,
                count_skipped: bool = True) -> tf.data.Dataset:
    """Turns a dataset of pairs into batches of ``{"image", "text"}``.

    Args:
      dataset: unbatched ``{"image": uint8/float (H, W, 3), "caption"}`` or
        ``{"image/encoded": string, "caption"}`` (decoded here, after shuffling).
      preprocessor: ``TextPreprocessor`` (strings → fixed-length ``token_ids``/``padding_mask``/
        ``segment_ids``), applied per batch.
      batch_size: examples per batch (per replica when called from a distributed dataset_fn).
      image_size, resize_size: ``preprocess_image``'s; the paper: 289 and 346.
      training: shuffle (seeded, so the order is reproducible), repeat, random crop/flip, and
        ``drop_remainder`` (static shapes for XLA/TPU); otherwise one pass, centre crops.
      shuffle_buffer, seed: the example shuffle.
      flip: random horizontal flip when training.
      skip_examples: drops that many examples of the shuffled stream before any decoding work: a
        resumed run passes the number already trained on.
      stats, count_skipped: where corrupt encoded images are counted (``tfrecord.STATS``).

    Returns:
      Batches of ``{"image": float32 (B, S, S, 3) in [0, 1], "text": {name: int32 (B, L)}}``.
    """
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed).repeat()
        if skip_examples:
            dataset = dataset.skip(skip_examples)
    if "image" not in dataset.element_spec:
        dataset = tfrecord.decode_images(dataset, stats, count_skipped)

    def prepare(example):
        image = preprocess_image(example["image"], image_size, resize_size, training, seed)
        if training and flip:
            image = tf.image.random_flip_left_right(image, seed=seed)
        return {"image": image, "caption": example["caption"]}

    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=training)

    def tokenize(batch):
        text = preprocessor(batch["caption"])
        if training:  # drop_remainder: give the tokens the same static batch size as the images
            text = tf.nest.map_structure(
                lambda t: tf.ensure_shape(t, [batch_size] + t.shape.as_list()[1:]), text)
        return {"image": batch["image"], "text": text}

    dataset = dataset.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
