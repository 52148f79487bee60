"""Index-based sampling of the training stream: what an input pipeline reads at a step, and how
each example is augmented, are pure functions of ``(seed, position)``.

The training stream is an endless sequence of *global positions* 0, 1, 2, ...; global batch ``b``
(the ``b``-th train step, applied or skipped) holds positions ``[b·B, (b+1)·B)``, ``B`` the global
batch. A resumed run builds its datasets starting at position ``batches_done·B``: nothing is
skipped and no input state is checkpointed.

* **Which record.** Over a random-access source of ``N`` records, position ``g`` is in epoch
  ``g // N`` and reads record ``permute(g % N)``, where ``permute`` is that epoch's pseudorandom
  permutation of ``[0, N)`` (``tf.random.experimental.index_shuffle``: a cycle-walking Simon
  block cipher keyed by ``(seed, epoch)``). Every record appears exactly once per epoch, in an
  order drawn afresh for every epoch, and any position is computed in O(1).
* **Which pipeline.** Input pipeline ``p`` of ``P`` reads the contiguous slice
  ``[b·B + p·B/P, b·B + (p+1)·B/P)`` of every global batch and hands it to its replicas in order
  (``Layout``). So the global batch, in replica order, is positions ``b·B ... (b+1)·B - 1``
  whatever ``P``: a run resumed on a different number of hosts (same global batch) continues
  exactly the stream of the interrupted one.
* **Which augmentation.** The example at position ``g`` is cropped and flipped with stateless ops
  seeded by ``example_seed(seed, g)``: hosts draw different crops, reruns and resumed runs the
  same ones.

TFRecord shards are not random access; ``tfrecord.read_training_pairs`` keeps this stream's layout
(positions, per-pipeline slices, augmentation seeds) and resumes with a bounded skip.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import tensorflow as tf

# Purposes folded into the seed, so each stream of random numbers is independent of the others.
RECORDS, SHARDS, SHUFFLE, AUGMENT = range(4)


def stream_key(seed: int, purpose: int, *words) -> tf.Tensor:
    """A ``[2]`` int64 stateless seed, a hash of ``(seed, purpose, *words)``.

    Fully mixed rather than ``stateless_fold_in``'s ``[hash, word]``: ``index_shuffle`` keys small
    permutations with the low bits of each seed word only, so consecutive epochs' raw words would
    repeat permutations (epoch e and e + 256 for N <= 2^16)."""
    key = tf.constant([seed, purpose], tf.int64)
    for word in words:
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(word, tf.int64))
    return tf.random.stateless_uniform([2], key, minval=None, maxval=None, dtype=tf.int64)


def _index_shuffle_is_broken(max_index: int) -> bool:
    """TF's kernel sizes its cipher block as ceil(log2(max_index)) bits (min 16, even): for
    ``max_index`` = 4^k >= 2^16 that block cannot hold ``max_index``, and the result is no
    permutation (two indices collide). Checked on TF 2.21."""
    return max_index >= 1 << 16 and max_index & (max_index - 1) == 0 and \
        (max_index.bit_length() - 1) % 2 == 0


def permute(index, key, num_records: int) -> tf.Tensor:
    """``index``'s image under the permutation of ``[0, num_records)`` keyed by ``key``.

    ``index``: int64 scalar or vector in ``[0, num_records)``. Where TF's ``index_shuffle`` is
    broken for ``num_records - 1``, it permutes ``[0, num_records]`` and cycle-walks the one index
    that lands on ``num_records`` (a bijection's restriction stays a bijection)."""
    if num_records < 1:
        raise ValueError(f"cannot permute {num_records} records")
    index = tf.cast(index, tf.int64)
    last = num_records - 1
    if not _index_shuffle_is_broken(last):
        return tf.random.experimental.index_shuffle(index, key, tf.constant(last, tf.int64))
    bound = tf.constant(num_records, tf.int64)
    out = tf.random.experimental.index_shuffle(index, key, bound)
    return tf.where(out == bound, tf.random.experimental.index_shuffle(out, key, bound), out)


def record_of(position, num_records: int, seed: int) -> tf.Tensor:
    """The record that global ``position`` reads: epoch ``position // N``'s permutation of its
    index within the epoch."""
    position = tf.cast(position, tf.int64)
    epoch, index = position // num_records, position % num_records
    return permute(index, stream_key(seed, RECORDS, epoch), num_records)


def example_seed(seed: int, position) -> tf.Tensor:
    """The ``[2]`` int64 stateless seed of the augmentation of the example at ``position``."""
    return stream_key(seed, AUGMENT, position)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Which global positions one input pipeline reads: per step, its contiguous
    ``per_pipeline`` slice of the ``global_batch``.

    The pipeline's ``t``-th example (``t`` counts from 0 at the start of training) is at
    ``global_position(t)``."""
    global_batch: int
    per_pipeline: int
    pipeline_id: int = 0

    def __post_init__(self):
        if self.global_batch % self.per_pipeline or \
                not 0 <= self.pipeline_id < self.global_batch // self.per_pipeline:
            raise ValueError(f"no pipeline {self.pipeline_id} of {self.per_pipeline} examples in "
                             f"a global batch of {self.global_batch}")

    def first_example(self, first_batch: int) -> int:
        """The pipeline's example index ``t`` at the start of global batch ``first_batch``."""
        return first_batch * self.per_pipeline

    def global_position(self, t):
        """Global position of the pipeline's ``t``-th example (int or int64 tensor)."""
        step, slot = t // self.per_pipeline, t % self.per_pipeline
        return step * self.global_batch + self.pipeline_id * self.per_pipeline + slot


def indexed_dataset(lookup: Callable, num_records: int, seed: int, layout: Layout,
                    first_batch: int = 0) -> tf.data.Dataset:
    """The pipeline's endless stream from global batch ``first_batch`` on, in O(1) of it.

    ``lookup(record)`` (int64 scalar → dict of tensors) reads one record of a random-access source
    of ``num_records``; each element is its dict plus ``"position"`` (int64, global)."""
    def example(t):
        position = layout.global_position(t)
        return dict(lookup(record_of(position, num_records, seed)), position=position)

    return tf.data.Dataset.counter(layout.first_example(first_batch)).map(
        example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def sample_arrays(arrays: dict, seed: int, layout: Layout,
                  first_batch: int = 0) -> tf.data.Dataset:
    """``indexed_dataset`` over in-memory arrays of equal length (e.g. ``{"image", "caption"}``)."""
    tensors = {name: tf.convert_to_tensor(value) for name, value in arrays.items()}
    num_records = int(next(iter(tensors.values())).shape[0])

    def lookup(record):
        return {name: tf.gather(value, record) for name, value in tensors.items()}

    return indexed_dataset(lookup, num_records, seed, layout, first_batch)
