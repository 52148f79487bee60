"""The corpus builder's output: deterministic TFRecord shards and ``stats.json``.

An example's shard is a hash of its id and a shard's records are sorted by that hash, so re-running
on the same input writes byte-identical shards with any runner or parallelism. Each shard is
written to a temporary name and renamed, so retried bundles are harmless.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid

import apache_beam as beam

from align_tf.corpus import filters


def _digest(example_id: str) -> bytes:
    return hashlib.sha1(example_id.encode("utf-8")).digest()


def shard_of(example_id: str, num_shards: int) -> int:
    """Deterministic shard of an example: a hash of its id."""
    return int.from_bytes(_digest(example_id)[:8], "big") % num_shards


def keyed_example(kept, num_shards: int):
    """A kept ``(row, encoded, width, height)`` as ``(shard, (sort key, serialized Example))``."""
    from align_tf.data.tfrecord import make_example
    row, encoded, width, height = kept
    record = make_example(encoded, row.text, row.id, width, height)  # deterministic bytes
    return shard_of(row.id, num_shards), (_digest(row.id), record)


class WriteShard(beam.DoFn):
    """Writes one shard's records (sorted: byte-identical re-runs) atomically; yields its count."""

    def __init__(self, output_prefix: str, num_shards: int):
        self.output_prefix, self.num_shards = output_prefix, num_shards

    def process(self, element):
        import tensorflow as tf

        from align_tf.data.tfrecord import shard_name
        index, grouped = element
        records = sorted(grouped["examples"])
        path = shard_name(self.output_prefix, index, self.num_shards)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with tf.io.TFRecordWriter(tmp) as writer:
            for _, record in records:
                writer.write(record)
        tf.io.gfile.rename(tmp, path, overwrite=True)
        yield index, len(records)


def write_stats(_, *, path, outcomes, shards, threshold, shared, damaged, config):
    """Writes ``stats.json`` at ``path`` from the pipeline's side inputs; returns its contents.

    ``outcomes``: ``(reason or "kept", count)`` pairs; ``shards``: ``(index, count)`` per shard;
    ``shared``: the most-shared ``(text key, images)``; ``damaged``: input files that ended early.
    """
    import tensorflow as tf
    counts = dict(outcomes)
    dropped = {r: counts.get(r, 0) for r in filters.DROP_REASONS}
    shard_counts = [n for _, n in sorted(shards)]
    stats = {
        "rows": sum(counts.values()),
        "kept": counts.get("kept", 0),
        "dropped": dropped,
        "ngram_count_threshold": threshold,
        "most_shared_texts": [[k, n] for k, n in shared],
        "num_shards": len(shard_counts),
        "shard_examples": shard_counts,
        "damaged_files": sorted(damaged),
        "config": dataclasses.asdict(config),
    }
    assert stats["kept"] == sum(shard_counts), (stats["kept"], shard_counts)
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(stats, f, indent=2, ensure_ascii=False)
    return stats
