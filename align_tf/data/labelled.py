"""Training batches of labelled images (``{"image", "label"}``) for fine-tuning a classifier.

The sets are the data sources' (``align_tf.data.sources``: ``Source.classification`` for the
in-memory synthetic classes, ``Source.labelled_examples`` for a streamed TFDS set), the same
objects the linear probe and the test read, so they share one loader and one list of class
names.

The stream keeps the training stream's conventions (``align_tf.data.sampling``): every example has
a global ``position``; its random crop and flip are drawn from ``(seed, position)``, and a resumed
run continues the stream of the interrupted one.

* In-memory sets (the synthetic classes) are read by index (``sampling.sample_arrays``): a fresh
  permutation per epoch, O(1) resume.
* TFDS sets stream: each input pipeline reads its shard, shuffles encoded images in a seeded
  buffer of ``shuffle_buffer`` (decoded after the shuffle, so the buffer holds compact bytes),
  repeats; a resumed run skips the examples already trained on (re-reading their bytes, O(steps),
  without decoding them).
"""

from __future__ import annotations

import tensorflow as tf

from align_tf import distribute
from align_tf.data import sampling
from align_tf.data.preprocessing import ImagePreprocessor


def train_dataset_fn(batch_size: int, seed: int, image_size: int, resize_size: int | None,
                     batches_done: int = 0, arrays: dict | None = None,
                     examples: tf.data.Dataset | None = None, shuffle_buffer: int = 10000,
                     flip: bool = True):
    """A ``distribute_datasets_from_function`` callable of per-replica ``{"image", "label"}``.

    Give exactly one source: ``arrays`` (``{"image": uint8 (N, H, W, 3), "label": (N,)}``, read by
    index) or ``examples`` (an unbatched ``{"image/encoded", "label"}`` dataset, streamed).
    ``batch_size`` is the global batch; the stream starts at global batch ``batches_done``.
    """
    if (arrays is None) == (examples is None):
        raise ValueError("give exactly one of arrays and examples")

    def dataset_fn(input_context: tf.distribute.InputContext):
        sizes = distribute.batch_sizes(batch_size, input_context.num_replicas_in_sync,
                                       input_context.num_input_pipelines)
        layout = sampling.Layout(sizes.global_batch, sizes.per_pipeline,
                                 input_context.input_pipeline_id)
        if arrays is not None:
            ds = sampling.sample_arrays(arrays, seed, layout, batches_done)
        else:
            first = layout.first_example(batches_done)
            ds = examples.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
            ds = tf.data.Dataset.zip(tf.data.Dataset.counter(first), ds.skip(first)).map(
                lambda t, ex: dict(ex, position=layout.global_position(t)))

            def decode(ex):
                image = tf.io.decode_image(ex["image/encoded"], channels=3,
                                           expand_animations=False)
                return {"image": image, "label": ex["label"], "position": ex["position"]}

            ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        images = ImagePreprocessor(image_size, resize_size, random_flip=flip)

        def prepare(ex):
            seeds = sampling.example_seed(seed, ex["position"])
            return {"image": images(ex["image"], training=True, seeds=seeds),
                    "label": tf.cast(ex["label"], tf.int32)}

        ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(sizes.per_replica, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return dataset_fn
