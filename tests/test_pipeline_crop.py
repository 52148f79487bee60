"""Training crops computed from the crop window only (preprocessing.crop_of_resized) are the crops
of the resized image that resize-then-crop produces; the stateless per-image draws are uniform over
the valid offsets, and flip with probability 1/2."""

import numpy as np
import pytest
import tensorflow as tf

from align_tf.data.preprocessing import ImagePreprocessor, crop_of_resized


def _resize_then_crop(image, image_size, resize_size, oy, ox):
    resized = tf.image.resize(tf.image.convert_image_dtype(image, tf.float32),
                              (resize_size, resize_size), antialias=True)
    return tf.clip_by_value(resized[oy:oy + image_size, ox:ox + image_size], 0.0, 1.0).numpy()


@pytest.mark.parametrize("shape", [(83, 118, 3), (40, 40, 3), (31, 57, 3)])
@pytest.mark.parametrize("dtype", [tf.uint8, tf.float32])
def test_crop_window_equals_resize_then_crop(shape, dtype):
    image = tf.constant(np.random.default_rng(0).integers(0, 256, shape), tf.uint8)
    if dtype == tf.float32:
        image = tf.image.convert_image_dtype(image, tf.float32)
    size, resize = 29, 35
    for oy, ox in [(0, 0), (6, 6), (2, 5)]:
        got = crop_of_resized(image, size, resize, offset=tf.constant([oy, ox]))
        assert got.shape == (size, size, 3) and got.dtype == tf.float32
        np.testing.assert_allclose(got.numpy(), _resize_then_crop(image, size, resize, oy, ox),
                                   atol=1e-4)


def test_training_crops_are_uniform_over_offsets_and_flips_fair():
    """Over 270 seeds, training returns one of the (resize - size + 1)² crops, each often, flipped
    about half the time; the whole-image resize path draws the same crop from the same seed."""
    image = tf.constant(np.random.default_rng(1).integers(0, 256, (23, 17, 3)), tf.uint8)
    size, resize = 8, 10
    crops = {(oy, ox): _resize_then_crop(image, size, resize, oy, ox)
             for oy in range(3) for ox in range(3)}
    counts, flips = dict.fromkeys(crops, 0), 0
    layer = ImagePreprocessor(size, resize)
    whole = ImagePreprocessor(size, resize, crop_window_resize=False)
    seeds = np.stack([np.arange(270), np.full(270, 11)], axis=1)
    got = layer(image[None] * tf.ones([270, 1, 1, 1], tf.uint8), training=True,
                seeds=seeds).numpy()
    np.testing.assert_allclose(
        whole(image[None] * tf.ones([270, 1, 1, 1], tf.uint8), training=True, seeds=seeds),
        got, atol=1e-4)
    for crop in got:
        match = [(k, flip) for k, c in crops.items() for flip in (False, True)
                 if np.abs(crop - (c[:, ::-1] if flip else c)).max() < 1e-4]
        assert len(match) == 1
        counts[match[0][0]] += 1
        flips += match[0][1]
    assert min(counts.values()) >= 10, counts  # expected 30 each, sd 5.2
    assert 100 <= flips <= 170, flips  # expected 135, sd 8.2
