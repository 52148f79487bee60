"""The index-based training stream (align_tf.data.sampling, tfrecord.read_training_pairs): each
epoch a permutation, disjoint per-pipeline slices of every global batch, resume at any batch equal
to the uninterrupted stream and independent of the batches before it, stateless per-example
augmentation."""

import json

import numpy as np
import pytest
import tensorflow as tf

from align_tf import tokenizer
from align_tf.data import pipeline, sampling, tfrecord

N = 37  # records of the in-memory source: batches straddle epochs


def _records(ds, n):
    return [int(e["record"]) for e in ds.take(n)]


def _arrays(first_batch=0, layout=sampling.Layout(8, 8), seed=0):
    return sampling.sample_arrays({"record": np.arange(N)}, seed, layout, first_batch)


def test_every_epoch_is_a_new_permutation():
    """Positions of an epoch read every record once, in an order drawn afresh each epoch and for
    each seed (epoch 256: the epoch's key is mixed, not a raw word index_shuffle truncates)."""
    one_by_one = sampling.Layout(1, 1)
    epochs = [_records(_arrays(epoch * N, one_by_one), N) for epoch in (0, 1, 256)]
    epochs.append(_records(_arrays(0, one_by_one, seed=1), N))
    for records in epochs:
        assert sorted(records) == list(range(N))
    assert all(a != b for i, a in enumerate(epochs) for b in epochs[i + 1:])
    assert _records(_arrays(0, one_by_one), 2 * N) == epochs[0] + epochs[1]


@pytest.mark.parametrize("num_records", [1, 2, 2**16 + 1, 2**18 + 1])
def test_permute_is_a_permutation(num_records):
    """Also where TF's index_shuffle alone is none (max_index a power of 4 >= 2^16)."""
    got = sampling.permute(tf.range(num_records, dtype=tf.int64),
                           sampling.stream_key(0, sampling.RECORDS, 0), num_records).numpy()
    np.testing.assert_array_equal(np.sort(got), np.arange(num_records))


def test_pipelines_take_disjoint_slices_of_every_global_batch():
    """P=2: pipeline p reads its half of each global batch; together, in pipeline order, they are
    the one-pipeline stream, so the stream does not depend on the number of hosts."""
    one = _records(_arrays(), 8 * 12)
    halves = [_records(_arrays(layout=sampling.Layout(8, 4, p)), 4 * 12) for p in range(2)]
    for b in range(12):
        assert halves[0][4 * b:4 * b + 4] + halves[1][4 * b:4 * b + 4] == one[8 * b:8 * b + 8]
    positions = [[int(e["position"]) for e in _arrays(layout=sampling.Layout(8, 4, p)).take(8)]
                 for p in range(2)]
    assert positions == [[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]]
    with pytest.raises(ValueError, match="no pipeline 2 of 4 examples"):
        sampling.Layout(8, 4, 2)


@pytest.mark.parametrize("first_batch", [1, 4, 9])
def test_resume_at_a_batch_continues_the_uninterrupted_stream(first_batch):
    full = _records(_arrays(), 8 * 12)
    assert _records(_arrays(first_batch), 8 * (12 - first_batch)) == full[8 * first_batch:]


def test_resume_at_a_huge_position_reads_only_its_records():
    """Batch 1.25e11 (position 1e12): the first examples are that epoch's records, and only the
    examples produced (plus read-ahead) are looked up, not the 1e12 before them."""
    looked_up = []

    def note(record):
        looked_up.append(int(record))
        return record

    def lookup(record):
        return {"record": tf.numpy_function(note, [record], tf.int64, stateful=True)}

    first_batch = 10**12 // 8
    ds = sampling.indexed_dataset(lookup, N, 0, sampling.Layout(8, 8), first_batch)
    got = [(int(e["position"]), int(e["record"])) for e in ds.take(5)]
    expected = []
    for position in range(10**12, 10**12 + 5):
        epoch, index = divmod(position, N)  # the whole epoch's order, computed at once
        order = sampling.permute(tf.range(N, dtype=tf.int64),
                                 sampling.stream_key(0, sampling.RECORDS, epoch), N).numpy()
        expected.append((position, int(order[index])))
    assert got == expected
    assert len(looked_up) < 1000


def _write_numbered(root, num_pairs, num_shards, stats_json=False):
    png = tf.io.encode_png(np.zeros((2, 2, 3), np.uint8)).numpy()
    paths = tfrecord.write_pairs([(png, str(i)) for i in range(num_pairs)], str(root / "pairs"),
                                 num_shards)
    if stats_json:  # as the builder writes it
        counts = [len(range(i, num_pairs, num_shards)) for i in range(num_shards)]
        (root / "stats.json").write_text(json.dumps(
            {"num_shards": num_shards, "shard_examples": counts,
             "config": {"shard_prefix": "pairs"}}))
    return paths


def _captions(first_batch, pattern, layout, context=None, n=40):
    ds = tfrecord.read_training_pairs(pattern, 5, layout, first_batch, shuffle_buffer=6,
                                      input_context=context)
    return [(int(e["caption"]), int(e["position"])) for e in ds.take(n)]


@pytest.mark.parametrize("num_shards,pipelines", [(5, 1), (6, 2), (1, 2)])
def test_shards_resume_exactly_once_per_epoch(tmp_path, monkeypatch, num_shards, pipelines):
    """Shards read 2 at a time (several groups per epoch), one or two pipelines (each its own
    shards, or both all of 1 shard keeping every other record): each pipeline's epoch holds its
    records once, the pipelines' records are disjoint, and resuming at any batch (within a group,
    across groups and epochs) continues the uninterrupted stream."""
    monkeypatch.setattr(tfrecord, "SHARDS_PER_GROUP", 2)
    _write_numbered(tmp_path, 30, num_shards)
    pattern = str(tmp_path / "pairs-*")
    per_pipeline = 30 // pipelines
    seen = []
    for p in range(pipelines):
        layout = sampling.Layout(4 * pipelines, 4, p)
        context = tf.distribute.InputContext(pipelines, p) if pipelines > 1 else None
        full = _captions(0, pattern, layout, context, n=4 * 11 + 20)
        for epoch in range(len(full) // per_pipeline):
            records = sorted(c for c, _ in full[epoch * per_pipeline:(epoch + 1) * per_pipeline])
            assert len(set(records)) == per_pipeline, records
            if epoch:
                assert records == seen[-1]
            else:
                seen.append(records)
        assert [pos for _, pos in full[:6]] == [layout.global_position(t) for t in range(6)]
        for first_batch in (3, 11):
            resumed = _captions(first_batch, pattern, layout, context, n=20)
            assert resumed == full[4 * first_batch:4 * first_batch + 20], first_batch
    assert sorted(sum(seen, [])) == list(range(30))


def test_shard_counts_from_stats_json_and_a_huge_resume(tmp_path, monkeypatch):
    """The builder's stats.json gives the record counts without reading the shards (a wrong one is
    believed: here it is right); a resume in epoch 10^9 starts at its group, so the stream from a
    batch equals the stream from an earlier batch of the same epoch minus the batches between."""
    monkeypatch.setattr(tfrecord, "SHARDS_PER_GROUP", 2)
    paths = _write_numbered(tmp_path, 40, 4, stats_json=True)
    assert tfrecord.shard_counts(paths) == [10] * 4
    (tmp_path / "stats.json").write_text(json.dumps(
        {"num_shards": 4, "shard_examples": [1, 2, 3, 4], "config": {"shard_prefix": "pairs"}}))
    assert tfrecord.shard_counts(paths) == [1, 2, 3, 4]
    (tmp_path / "stats.json").unlink()
    assert tfrecord.shard_counts(paths) == [10] * 4  # counted
    layout = sampling.Layout(4, 4)
    epoch_start = 10**9 * 40 // 4  # batch 1e10 starts epoch 1e9 (10 batches per epoch)
    early = _captions(epoch_start + 2, str(tmp_path / "pairs-*"), layout, n=24)
    later = _captions(epoch_start + 5, str(tmp_path / "pairs-*"), layout, n=12)
    assert later == early[12:] and early[0][1] == (epoch_start + 2) * 4


def test_augmentation_is_per_example_and_reproducible():
    """All records are one image: crops and flips differ between examples and between the two
    pipelines of a global batch, a rerun draws the same ones, a resumed run the same ones as the
    uninterrupted run at the same positions."""
    image = np.random.default_rng(0).integers(0, 256, (12, 12, 3), np.uint8)
    arrays = {"image": np.repeat(image[None], N, 0), "caption": np.array(["a b"] * N)}
    pre = tokenizer.TextPreprocessor(tokenizer.RESERVED_TOKENS + ["a", "b"], sequence_length=4)

    def batches(layout, first_batch=0, n=3):
        ds = pipeline.batch_pairs(sampling.sample_arrays(arrays, 1, layout, first_batch), pre,
                                  layout.per_pipeline, image_size=8, resize_size=11, seed=1)
        return [b["image"].numpy() for b in ds.take(n)]

    first, second = batches(sampling.Layout(16, 8, 0)), batches(sampling.Layout(16, 8, 1))
    crops = np.concatenate(first + second).reshape(48, -1)
    assert len(np.unique(crops, axis=0)) >= 16  # 16 crops × 2 flips possible; 48 draws
    assert all((a != b).any() for a, b in zip(first, second))
    np.testing.assert_array_equal(batches(sampling.Layout(16, 8, 0)), first)
    np.testing.assert_array_equal(batches(sampling.Layout(16, 8, 1), first_batch=1, n=2),
                                  second[1:])
    # The same global batch read by one pipeline: the same crops, in pipeline order.
    whole = batches(sampling.Layout(16, 16), n=3)
    np.testing.assert_array_equal(whole, np.concatenate([first, second], axis=1))
