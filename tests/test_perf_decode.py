"""Reduced-scale JPEG decoding for training crops (preprocessing.decode_for_resize): the DCT ratio
chosen keeps both sides ≥ the resize size, the crop lands where the full-scale decode puts it, and
the pixels stay within a few levels of the full-scale path's, through the whole input pipeline."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from align_tf.data import pipeline, sampling, tfrecord
from align_tf.data.preprocessing import crop_of_resized, decode_for_resize
from align_tf.tokenizer import RESERVED_TOKENS, TextPreprocessor

S, R = 29, 35  # the paper's 289 / 346, scaled down


def _photo(h, w, seed=0, fmt="JPEG"):
    """Smooth colour waves, a few sharp-edged boxes and mild noise (web-photo-like)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 90 * np.sin(xx / rng.uniform(8, 30) + c) *
                     np.cos(yy / rng.uniform(8, 30)) for c in range(3)], -1)
    for _ in range(6):
        y, x = rng.integers(0, h - h // 4), rng.integers(0, w - w // 4)
        base[y:y + h // 5, x:x + w // 5] = rng.uniform(0, 255, 3)
    pixels = np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.mark.parametrize("h, w, ratio", [(150, 290, 4), (290, 150, 4), (71, 100, 2),
                                         (140, 139, 2), (69, 300, 1), (285, 288, 8)])
def test_ratio_keeps_both_sides_at_least_the_resize_size(h, w, ratio):
    image, sizes = decode_for_resize(tf.constant(_photo(h, w)), R)
    assert image.dtype == tf.uint8
    assert image.shape == (-(-h // ratio), -(-w // ratio), 3)  # libjpeg rounds partial blocks up
    np.testing.assert_allclose(sizes.numpy(), [h / ratio, w / ratio])
    assert min(sizes.numpy()) >= R


def test_non_jpeg_decodes_at_full_scale():
    image, sizes = decode_for_resize(tf.constant(_photo(150, 160, fmt="PNG")), R)
    assert image.shape == (150, 160, 3)
    np.testing.assert_array_equal(image.numpy(), tf.io.decode_png(_photo(150, 160, fmt="PNG"))
                                  .numpy())
    np.testing.assert_allclose(sizes.numpy(), [150, 160])


@pytest.mark.parametrize("h, w", [(150, 290), (71, 100), (140, 139), (203, 77)])
def test_crops_match_the_full_scale_decode(h, w):
    """Every corner and a middle offset: mean difference ≤ 2 of 255 levels, none above 24 (sharp
    edges: the DCT-domain downscale is a slightly different low-pass than the antialiased
    triangle; at the paper's sizes, 700 px → 346, measured mean 0.7, max 3.7), and well below the
    difference a one-pixel misplacement of the crop makes."""
    encoded = tf.constant(_photo(h, w, seed=h + w))
    full = tf.io.decode_jpeg(encoded, channels=3)
    reduced, sizes = decode_for_resize(encoded, R)
    assert reduced.shape[0] < h  # the reduced path ran
    for offset in [(0, 0), (R - S, R - S), (0, R - S), (R - S, 0), (3, 3)]:
        offset = tf.constant(offset)
        want = crop_of_resized(full, S, R, offset).numpy()
        got = crop_of_resized(reduced, S, R, offset, sizes).numpy()
        diff = np.abs(got - want) * 255
        assert diff.mean() <= 2 and diff.max() <= 24, (offset, diff.mean(), diff.max())
        # Misplaced by one resized pixel, the crop would be far further off.
        shifted = crop_of_resized(full, S, R, offset + [1, 0] if offset[0] == 0
                                  else offset - [1, 0]).numpy()
        assert np.abs(shifted - want).mean() * 255 > 3 * diff.mean()


def test_pipeline_reduced_decode_draws_the_same_crops_and_skips_corrupt(tmp_path):
    """Training batches from shards of large JPEGs: the reduced-scale path gives the full-scale
    path's crops and flips (same seeds), and a corrupt record is still skipped and counted."""
    encoded = [_photo(90 + 13 * i, 160 - 7 * i, seed=i) for i in range(8)]
    pairs = [(e, f"caption {i}") for i, e in enumerate(encoded)]
    pairs.insert(3, (b"\xff\xd8\xff not a jpeg", "corrupt"))
    tfrecord.write_pairs(pairs, str(tmp_path / "pairs"), 1)
    text = TextPreprocessor(RESERVED_TOKENS + ["caption"], 8)

    def batches(reduced, stats):
        ds = tfrecord.read_training_pairs(str(tmp_path / "pairs-*.tfrecord"), 0,
                                          sampling.Layout(8, 8), shuffle_buffer=1)
        ds = pipeline.batch_pairs(ds, text, 8, S, R, training=True, seed=5, stats=stats,
                                  reduced_decode=reduced)
        return next(iter(ds))["image"].numpy()

    stats_reduced, stats_full = tfrecord.ReadStats(), tfrecord.ReadStats()
    got, want = batches(True, stats_reduced), batches(False, stats_full)
    diff = np.abs(got - want) * 255
    assert diff.mean() <= 1.5 and diff.max() <= 24, (diff.mean(), diff.max())
    # Prefetching reads ahead by varying amounts: each path has met the corrupt record.
    assert stats_reduced.as_dict()["corrupt_image"] >= 1
    assert stats_full.as_dict()["corrupt_image"] >= 1
