"""tf.data input pipeline: (image, alt-text) pairs → batches the dual encoder trains on.

Images go through ``align_tf.data.preprocessing.ImagePreprocessor``, the layer export uses too:
training follows the paper (§5), resize to ``resize_size`` then random-crop ``image_size`` and
random horizontal flip; evaluation resizes and centre-crops. Text is tokenized inside the pipeline
by the model's own ``TextPreprocessor`` so training and export share one tokenizer.

Training batches come from an ordered, endless stream whose examples carry their global stream
``position`` (``sampling.sample_arrays`` over in-memory arrays, ``tfrecord.read_training_pairs``
over shards): which example comes when is decided there, and each example's crop and flip are
drawn here from ``(seed, position)``. Encoded images (``{"image/encoded", ...}``) are decoded
here, after the stream's shuffle, so shuffle buffers hold compact JPEG bytes; corrupt ones are
skipped and counted in the ``tfrecord.ReadStats`` passed as ``stats``.
"""

from __future__ import annotations

import tensorflow as tf

from align_tf.data import sampling, tfrecord
from align_tf.data.preprocessing import ImagePreprocessor, decode_for_resize


def batch_pairs(dataset: tf.data.Dataset, preprocessor, batch_size: int, image_size: int,
                resize_size: int | None = None, training: bool = True, seed: int = 0,
                flip: bool = True, crop_window_resize: bool = True,
                stats: tfrecord.ReadStats | None = None,
                count_skipped: bool = True, reduced_decode: bool = True) -> tf.data.Dataset:
    """Turns a dataset of pairs into batches of ``{"image", "text"}``.

    Args:
      dataset: unbatched ``{"image": uint8/float (H, W, 3), "caption"}`` or
        ``{"image/encoded": string, "caption"}`` (decoded here). Training: the ordered endless
        stream of the input pipeline, with an int64 ``"position"`` per example (module docstring).
      preprocessor: ``TextPreprocessor`` (strings → fixed-length ``token_ids``/``padding_mask``/
        ``segment_ids``), applied per batch.
      batch_size: examples per batch (per replica when called from a distributed dataset_fn).
      image_size, resize_size: the ``ImagePreprocessor``'s; the paper: 289 and 346.
      training: random crop/flip and ``drop_remainder`` (static shapes for XLA/TPU); otherwise
        centre crops of every example, the last batch possibly smaller.
      seed: the run's seed; with ``position`` it seeds each example's crop and flip.
      flip: random horizontal flip when training.
      crop_window_resize: the ``ImagePreprocessor``'s (``False``: the slower whole-image resize
        before the random crop).
      stats, count_skipped: where corrupt encoded images are counted (a ``tfrecord.ReadStats``).
      reduced_decode: training crops of encoded JPEGs decode them at 1/2, 1/4 or 1/8 scale
        when that stays ≥ ``resize_size`` (``preprocessing.decode_for_resize``; the same crop
        geometry, pixels within a few levels of the full decode's). ``False``: full decode.

    Returns:
      Batches of ``{"image": float32 (B, S, S, 3) in [0, 1], "text": {name: int32 (B, L)}}``.
    """
    if training and "position" not in dataset.element_spec:
        raise ValueError("training batches need each example's stream position: read them with "
                         "sampling.sample_arrays or tfrecord.read_training_pairs")
    images = ImagePreprocessor(image_size, resize_size, random_flip=flip,
                               crop_window_resize=crop_window_resize)

    def prepare(example, sizes=None):
        seeds = sampling.example_seed(seed, example["position"]) if training else None
        return {"image": images(example["image"], training=training, seeds=seeds, sizes=sizes),
                "caption": example["caption"]}

    if "image" in dataset.element_spec:
        dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    elif training and reduced_decode and crop_window_resize and images._crops:  # noqa: SLF001
        # Decode and crop in one skipping map: a corrupt image fails in either and is skipped.
        def decode_and_prepare(example):
            image, sizes = decode_for_resize(example["image/encoded"], images.resize_size)
            return prepare(dict(example, image=image), sizes)

        dataset = tfrecord.map_skipping_errors(
            dataset, decode_and_prepare, "corrupt_image", stats, count_skipped,
            lambda ex: ex["source"] if "source" in ex else tf.constant(""))
    else:
        dataset = tfrecord.decode_images(dataset, stats, count_skipped)
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
