"""TFRecord shards of (image, alt-text) pairs: the on-disk corpus format, and reading it robustly.

Each record is a ``tf.train.Example`` with ``image/encoded`` (JPEG/PNG bytes) and ``caption``
(UTF-8 alt-text). Shards written by ``align_tf.data.build`` also carry ``id`` (string),
``image/width`` and ``image/height`` (int64); readers only need the first two. The writers
(``make_example``, ``shard_name``, ``write_pairs``) are in ``align_tf.data.tfrecord_writer``.

Training reads ``read_training_pairs``: each input pipeline's endless, seeded stream over its share
of the shards, which a resumed run re-enters at its step skipping at most one group of shards (see
``align_tf.data.sampling`` for the stream's layout). ``read_pairs`` is one pass, for tools and
evaluation.

Corrupt data never stops training. Two kinds exist and are handled differently:

* A record whose bytes are intact but whose content is bad (not an ``Example``, no image, image
  bytes that do not decode — e.g. a truncated upload that slipped past the builder) is skipped
  and **counted** exactly in the ``ReadStats`` the caller passes (each reader its own: the trainer
  logs its pipeline's as ``skipped_records``; no process-wide counter).
* A shard whose *framing* is damaged (CRC mismatch, file cut short) makes ``TFRecordDataset``
  raise ``DataLossError``; that file's remaining records are skipped with a logged warning
  (``ignore_errors`` on that file only). TFRecord framing cannot be resynchronised, and tf.data
  gives no hook to count what ``ignore_errors`` dropped, so these are logged, not counted.

How the count is exact without giving up parallel decoding: each record is decoded inside its own
one-element dataset, ``from_tensors(record).map(decode).ignore_errors()``, concatenated with a
placeholder marked invalid and cut to one element. A parallel, deterministic ``interleave`` over
those yields *every* record, decoded or flagged invalid, so a failure becomes data instead of an
exception; invalid elements are then counted and filtered out. (A plain ``map(...).ignore_errors()``
drops failures silently: the number of drops is unknowable without per-element state.) The
counter is a Python object bumped through ``tf.numpy_function`` only on the invalid path, so the
hot path stays pure graph; pass ``count_skipped=False`` where a Python callback cannot run (a
dataset serialised to tf.data service or a remote TPU host): records are still skipped.
"""

from __future__ import annotations

import json
import logging
import posixpath
import threading

import numpy as np
import tensorflow as tf

from align_tf.data import sampling
# The writers live apart; their names stay importable from here.
from align_tf.data.tfrecord_writer import make_example, shard_name, write_pairs  # noqa: F401

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "caption": tf.io.FixedLenFeature([], tf.string),
}
# The (image, caption) feature names of our shards; other layouts pass theirs as ``keys``
# (img2dataset's TFRecords: ``align_tf.data.img2dataset.KEYS``).
KEYS = ("image/encoded", "caption")
# Read-ahead per shard: large sequential reads matter on GCS/remote file systems.
READ_BUFFER_BYTES = 8 << 20
_LOG_FIRST = 10  # corrupt records logged individually; later ones are only counted

log = logging.getLogger(__name__)


class ReadStats:
    """Thread-safe counts of records skipped by the readers, by reason.

    Reasons: ``"corrupt_record"`` (not a parseable ``Example`` with the expected features) and
    ``"corrupt_image"`` (image bytes that do not decode). Read ``as_dict()`` or ``skipped`` at any
    time, e.g. to log as a training metric; ``reset()`` between experiments.
    """

    REASONS = ("corrupt_record", "corrupt_image")

    def __init__(self):
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self.REASONS, 0)

    def record(self, reason, source) -> np.int64:
        """Counts one skipped record (called from the tf.data graph via ``tf.numpy_function``)."""
        reason = reason.decode() if isinstance(reason, bytes) else str(reason)
        source = source.decode(errors="replace") if isinstance(source, bytes) else str(source)
        with self._lock:
            self._counts[reason] = self._counts.get(reason, 0) + 1
            n = sum(self._counts.values())
        if n <= _LOG_FIRST:
            log.warning("skipped a %s from %s (%d skipped so far)", reason, source or "?", n)
        elif n == _LOG_FIRST + 1:
            log.warning("more corrupt records are being skipped; only counting from now on")
        return np.int64(n)

    @property
    def skipped(self) -> int:
        """All records skipped so far."""
        with self._lock:
            return sum(self._counts.values())

    def as_dict(self) -> dict:
        """``{reason: count}`` for every reason (zeros included)."""
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(self.REASONS, 0)


# ------------------------------------------------------------------------------------ reading


def _placeholder(spec):
    """A zero-size value matching ``spec`` (unknown dimensions become 0)."""
    shape = [0 if d is None else d for d in spec.shape.as_list()]
    return tf.zeros(shape, spec.dtype) if spec.dtype != tf.string else tf.fill(shape, "")


def map_skipping_errors(dataset: tf.data.Dataset, fn, reason: str,
                        stats: ReadStats | None = None, count_skipped: bool = True,
                        source_of=None) -> tf.data.Dataset:
    """``dataset.map(fn)`` in parallel and in order, dropping elements where ``fn`` fails.

    Each drop is counted under ``reason`` in ``stats`` (None: not observed); ``source_of(element)``
    (e.g. the shard path) is logged with the first few. See the module docstring for why this is
    built from one-element datasets rather than ``ignore_errors``.
    """
    stats = stats if stats is not None else ReadStats()
    def traced(*e):  # tuple elements reach fn as one tuple
        return fn(e[0] if len(e) == 1 else e)

    out_spec = dataset.map(traced).element_spec  # traces fn once, to shape the placeholder
    invalid = tf.nest.map_structure(_placeholder, out_spec)

    def one(*element):
        element = element[0] if len(element) == 1 else element
        source = source_of(element) if source_of else tf.constant("")

        def apply(*e):
            return fn(e[0] if len(e) == 1 else e), True, source

        good = tf.data.Dataset.from_tensors(element).map(apply).ignore_errors()
        return good.concatenate(tf.data.Dataset.from_tensors((invalid, False, source))).take(1)

    def count(value, ok, source):
        if count_skipped:
            tf.cond(ok, lambda: tf.constant(0, tf.int64),
                    lambda: tf.numpy_function(stats.record, [reason, source], tf.int64,
                                              stateful=True))
        return value, ok

    def is_valid(value, ok):
        return ok

    def strip_flag(value, ok):
        return value

    ds = dataset.interleave(one, cycle_length=tf.data.AUTOTUNE, block_length=1,
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.map(count)  # sequential and cheap: the callback only runs for invalid elements
    return ds.filter(is_valid).map(strip_flag)


def parse_record(source, record, keys: tuple = KEYS):
    """A serialised Example → ``{"image/encoded", "caption", "source"}`` (fails if malformed);
    ``keys``: the record's (image, caption) feature names."""
    image, caption = keys
    ex = tf.io.parse_single_example(record, {image: tf.io.FixedLenFeature([], tf.string),
                                             caption: tf.io.FixedLenFeature([], tf.string)})
    return {"image/encoded": ex[image], "caption": ex[caption], "source": source}


def decode_image(encoded):
    """JPEG/PNG/GIF/BMP bytes → uint8 ``(H, W, 3)``; fails on undecodable or empty images."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    tf.debugging.assert_positive(tf.reduce_prod(tf.shape(image)[:2]), "empty image")
    return image


def decode_images(dataset: tf.data.Dataset, stats: ReadStats | None = None,
                  count_skipped: bool = True) -> tf.data.Dataset:
    """``{"image/encoded", "caption", ...}`` → ``{"image", "caption", ...}``; bad images skipped.

    Other features but ``source`` (e.g. the stream ``position``) pass through. Skipped images are
    counted as ``"corrupt_image"`` in ``stats`` (None: not observed).
    """
    def decode(ex):
        kept = {k: v for k, v in ex.items() if k not in ("image/encoded", "source")}
        return dict(kept, image=decode_image(ex["image/encoded"]))

    def source_of(ex):
        return ex["source"] if "source" in ex else tf.constant("")

    return map_skipping_errors(dataset, decode, "corrupt_image", stats, count_skipped, source_of)


def _match(pattern: str) -> list:
    """Sorted files matching ``pattern`` (several globs may be joined with commas)."""
    files = sorted({f for p in pattern.split(",") if p for f in tf.io.gfile.glob(p.strip())})
    if not files:
        raise FileNotFoundError(f"No TFRecord files match {pattern!r}.")
    return files


def _share(files: list, input_context: tf.distribute.InputContext | None):
    """``(files, keep)``: the shards this input pipeline reads, and ``(n, i)`` if it must keep
    only every ``n``-th record of them (fewer shards than pipelines), else ``None``."""
    if input_context is None or input_context.num_input_pipelines == 1:
        return files, None
    n, i = input_context.num_input_pipelines, input_context.input_pipeline_id
    if len(files) >= n:
        return files[i::n], None  # as Dataset.shard(n, i)
    log.warning("%d shards for %d input pipelines: each pipeline reads every shard and keeps 1 "
                "record in %d; write at least as many shards as hosts", len(files), n, n)
    return files, (n, i)


def _records(path):
    """``(path, serialised record)`` of one shard; a ``DataLossError`` (bad CRC, truncated shard)
    ends that file only."""
    def with_path(record):
        return path, record

    return tf.data.TFRecordDataset(path, buffer_size=READ_BUFFER_BYTES).map(
        with_path).ignore_errors(log_warning=True)


def read_pairs(pattern: str, shuffle_files: bool = True, seed: int | None = None,
               input_context: tf.distribute.InputContext | None = None, decode: bool = True,
               stats: ReadStats | None = None, count_skipped: bool = True) -> tf.data.Dataset:
    """One pass over the pairs of the shards matching ``pattern`` (a glob, local or any
    ``tf.io.gfile`` URI); training reads ``read_training_pairs``' endless stream instead.

    Args:
      pattern: shard glob, e.g. ``gs://bucket/corpus/pairs-*.tfrecord``; several globs may be
        joined with commas.
      shuffle_files: visit shards in a seeded random order.
      seed: shuffle seed (the order is reproducible for a fixed seed).
      input_context: from ``distribute_datasets_from_function``: each input pipeline reads a
        disjoint set of shards. With fewer shards than pipelines, every pipeline reads all shards
        and keeps every ``num_input_pipelines``-th record instead (correct, but each reads all).
      decode: ``True`` yields ``{"image": uint8 (H, W, 3), "caption": string}``. ``False`` yields
        ``{"image/encoded", "caption", "source"}`` (``source``: the shard path, for log lines), to
        decode later with ``decode_images``.
      stats, count_skipped: where skipped corrupt records are counted (module docstring).

    Returns:
      An unbatched ``tf.data.Dataset``; records are interleaved from several shards in parallel,
      deterministically.
    """
    files, keep = _share(_match(pattern), input_context)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        ds = ds.shuffle(len(files), seed=seed)

    def parse(path_and_record):
        return parse_record(*path_and_record)

    def path_of(path_and_record):
        return path_and_record[0]

    ds = ds.interleave(_records, cycle_length=tf.data.AUTOTUNE, block_length=1,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if keep is not None:
        ds = ds.shard(*keep)
    ds = map_skipping_errors(ds, parse, "corrupt_record", stats, count_skipped, path_of)
    return decode_images(ds, stats, count_skipped) if decode else ds


# ---------------------------------------------------------------------------- training stream

# Shards read at once by a training pipeline, and the most a resume skips: one such group.
SHARDS_PER_GROUP = 16


def _builder_counts(directory: str) -> dict:
    """``{shard file name: records}`` from the builder's ``stats.json`` in ``directory``."""
    path = posixpath.join(directory, "stats.json")
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        stats = json.load(f)
    counts = stats.get("shard_examples", [])
    prefix = posixpath.join(directory, stats.get("config", {}).get("shard_prefix", "pairs"))
    return {posixpath.basename(shard_name(prefix, i, len(counts))): int(n)
            for i, n in enumerate(counts)}


def shard_counts(files: list) -> list:
    """Records per shard: from the builder's ``stats.json`` beside the shards where it lists them
    (``shard_examples``), else counted (a pass over each record's framing, no parsing)."""
    listed, of_directory = {}, {}
    for path in files:
        directory, name = posixpath.split(path)
        if directory not in of_directory:
            of_directory[directory] = _builder_counts(directory)
        if name in of_directory[directory]:
            listed[path] = of_directory[directory][name]
    missing = [p for p in files if p not in listed]
    if missing:
        def count(path):
            return _records(path).reduce(tf.constant(0, tf.int64), lambda n, _: n + 1)

        counted = tf.data.Dataset.from_tensor_slices(missing).map(
            count, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        listed.update(zip(missing, (int(n) for n in counted.as_numpy_iterator())))
    return [listed[p] for p in files]


def _kept(records: int, keep) -> int:
    """How many of a group's ``records`` the pipeline keeps (``keep``: ``_share``'s)."""
    if keep is None:
        return records
    n, i = keep
    return max(0, (records - i + n - 1) // n)


def _shard_order(num_files: int, seed: int, epoch) -> tf.Tensor:
    """The order in which a pipeline visits its shards in ``epoch``: a permutation of indices."""
    return sampling.permute(tf.range(num_files, dtype=tf.int64),
                            sampling.stream_key(seed, sampling.SHARDS, epoch), num_files)


def _locate(start: int, files: list, keep, seed: int, group: int) -> tuple:
    """``(group index, offset)`` of the pipeline's ``start``-th record: its epoch from the shard
    record counts, then the group of that epoch's shard order it falls in."""
    counts = shard_counts(files)
    # One group per epoch when keeping every n-th record: the epoch's length is then fixed.
    per_epoch = _kept(sum(counts), keep)
    if per_epoch == 0:
        raise ValueError(f"the {len(files)} shards of this input pipeline hold no records")
    epoch, offset = divmod(start, per_epoch)
    order = _shard_order(len(files), seed, epoch).numpy()
    sizes = [_kept(sum(counts[j] for j in order[g:g + group]), keep)
             for g in range(0, len(files), group)]
    ends = np.cumsum(sizes)
    g = int(np.searchsorted(ends, offset, side="right"))
    return epoch * len(sizes) + g, offset - int(ends[g] - sizes[g])


def read_training_pairs(pattern: str, seed: int, layout: sampling.Layout, first_batch: int = 0,
                        shuffle_buffer: int = 10_000,
                        input_context: tf.distribute.InputContext | None = None,
                        stats: ReadStats | None = None, count_skipped: bool = True,
                        keys: tuple = KEYS) -> tf.data.Dataset:
    """The endless training stream of one input pipeline over shards, from global batch
    ``first_batch`` on: ``{"image/encoded", "caption", "source", "position"}``.

    Shards are not random access, so this is ``sampling``'s stream with shard-local shuffling:
    each epoch visits the pipeline's shards (``_share``: disjoint per pipeline) in an order drawn
    from ``(seed, epoch)``, ``SHARDS_PER_GROUP`` at a time; a group's records are interleaved and
    shuffled in windows of ``shuffle_buffer`` records, each permuted by a stateless shuffle keyed
    by ``(seed, group, window)`` (``Dataset.shuffle`` cannot take a per-group seed: a tensor seed
    fails when TF's global seed is 0). The next window is read while one is consumed, so up to
    three windows' records are in memory (a sliding buffer of the same size holds one). The
    builder's shards are hash-partitioned and hash-ordered, so shard-local mixing loses nothing to
    mixing across the whole corpus. Every record appears once per epoch of the pipeline's share.

    Resuming: ``first_batch`` is located from the shards' record counts (``shard_counts``) and
    the stream starts at its group, skipping at most one group's records (raw, unparsed; the
    paper's 4096 shards on 128 hosts: at most 16 of the 32 shards a host reads). Positions count
    records as written, so the resume is exact unless corrupt records or images were dropped
    before it: each moves the resumed stream one record back (re-reading it), nothing is lost.
    With a different number of input pipelines the shares differ: the resumed stream is a new
    one, at the same share of the epoch.

    Args:
      pattern: shard glob(s), as ``read_pairs``.
      seed: the run's seed.
      layout: the pipeline's slice of each global batch (``sampling.Layout``); ``position`` is the
        record's global stream position, which seeds its augmentation.
      first_batch: the global batch to start at (a resumed run's ``batches_done``).
      shuffle_buffer: records per shuffle window (``data.shuffle_buffer``).
      input_context: ``distribute_datasets_from_function``'s, for the pipeline's share.
      stats, count_skipped: where skipped corrupt records are counted (module docstring).
      keys: the records' (image, caption) feature names (``KEYS``: our shards).
    """
    files, keep = _share(_match(pattern), input_context)
    if not any(tf.io.gfile.stat(f).length for f in files):
        raise ValueError(f"the {len(files)} shards of this input pipeline are empty")
    group = len(files) if keep is not None else min(len(files), SHARDS_PER_GROUP)
    groups = -(-len(files) // group)
    start = layout.first_example(first_batch)
    first_group, offset = _locate(start, files, keep, seed, group) if start else (0, 0)
    paths = tf.constant(files)

    def group_records(k):
        order = _shard_order(len(files), seed, k // groups)
        members = tf.gather(paths, order[(k % groups) * group:(k % groups + 1) * group])
        ds = tf.data.Dataset.from_tensor_slices(members).interleave(
            _records, cycle_length=group, block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True)
        if keep is not None:
            ds = ds.shard(*keep)

        def shuffle_window(w, window):
            key = sampling.stream_key(seed, sampling.SHUFFLE, k, w)
            shuffled = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(window[0])[0]),
                                                                key)
            return tuple(tf.gather(part, shuffled) for part in window)

        # The next window is read while this one is consumed: no stall at window boundaries.
        return ds.batch(shuffle_buffer).enumerate().map(shuffle_window).prefetch(1).unbatch()

    def with_position(t, path_and_record):
        return (*path_and_record, layout.global_position(t))

    def parse(element):
        path, record, position = element
        return dict(parse_record(path, record, keys), position=position)

    def path_of(element):
        return element[0]

    ds = tf.data.Dataset.counter(first_group).flat_map(group_records)
    if offset:
        ds = ds.skip(offset)  # within the first group: records are not parsed yet
    ds = ds.enumerate(start).map(with_position)
    return map_skipping_errors(ds, parse, "corrupt_record", stats, count_skipped, path_of)
