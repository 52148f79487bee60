"""ImagePreprocessor: the one image preprocessing layer of training, evaluation and export."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from align_tf.data.preprocessing import ImagePreprocessor

S, R = 8, 12  # image_size, resize_size
OFFSET = (R - S) // 2
ANY_IMAGES = tf.TensorSpec([None, None, None, 3], tf.float32)


def _images(shape, seed=0):
    return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)


def _windows(image):
    """Every ``S × S`` window of an ``R × R`` image, by offset (a NumPy reference of the crops: an
    image already ``R`` square is its own resize)."""
    return {(y, x): image[y:y + S, x:x + S] for y in range(R - S + 1) for x in range(R - S + 1)}


def test_eval_centre_crop_and_identity():
    image = _images((R, R, 3))
    np.testing.assert_allclose(ImagePreprocessor(S, R)(image).numpy(),
                               image[OFFSET:OFFSET + S, OFFSET:OFFSET + S], atol=1e-6)
    # Already S × S without a crop: returned as given (no resize), also when the shape is only
    # known at run time.
    small = _images((2, S, S, 3))
    for resize in (None, S):
        layer = ImagePreprocessor(S, resize)
        np.testing.assert_array_equal(layer(small).numpy(), small)
        traced = tf.function(lambda x, layer=layer: layer(x), input_signature=[ANY_IMAGES])
        np.testing.assert_array_equal(traced(small).numpy(), small)
    # uint8 pixels are scaled to [0, 1].
    gray = np.full((5, 7, 3), 51, np.uint8)
    np.testing.assert_allclose(ImagePreprocessor(S, R)(gray).numpy(), np.full((S, S, 3), 0.2),
                               atol=1e-6)


@pytest.mark.parametrize("resize", [None, S, R])
@pytest.mark.parametrize("shape", [(3, 13, 9, 3), (2, S, S, 3), (2, R, R, 3)])
def test_eval_single_batched_and_traced_agree(shape, resize):
    layer = ImagePreprocessor(S, resize)
    images = _images(shape, seed=len(shape) + shape[1])
    batched = layer(images, training=False).numpy()
    assert batched.shape == (shape[0], S, S, 3) and batched.dtype == np.float32
    single = np.stack([layer(im).numpy() for im in images])
    traced = tf.function(lambda x: layer(x), input_signature=[ANY_IMAGES])(images).numpy()
    np.testing.assert_array_equal(batched, single)
    np.testing.assert_array_equal(batched, traced)
    uint8 = (images * 255).astype(np.uint8)
    scaled = uint8.astype(np.float32) * np.float32(1 / 255)  # as tf.image.convert_image_dtype
    np.testing.assert_array_equal(layer(uint8).numpy(), layer(scaled).numpy())


@pytest.mark.parametrize("crop_window_resize", [True, False])
def test_training_crops_are_windows_of_the_resized_image(crop_window_resize):
    image = _images((R, R, 3), seed=1)
    windows = _windows(image)
    layer = ImagePreprocessor(S, R, random_flip=False, crop_window_resize=crop_window_resize)
    fn = tf.function(lambda x, seed: layer(x, training=True, seeds=seed))
    seen = set()
    for i in range(40):
        got = fn(image, tf.constant([i, 0], tf.int64)).numpy()
        assert got.shape == (S, S, 3) and got.dtype == np.float32
        assert got.min() >= 0.0 and got.max() <= 1.0
        match = [k for k, w in windows.items() if np.abs(got - w).max() < 3e-5]
        assert len(match) == 1
        seen.add(match[0])
    assert len(seen) > 5  # the offset is drawn, not fixed


def _flipped(got, images):
    """Per image: True if ``got`` is its mirror image, False if it is the image itself."""
    out = []
    for g, im in zip(got, images):
        same, mirror = np.array_equal(g, im), np.array_equal(g, im[:, ::-1])
        assert same != mirror
        out.append(mirror)
    return np.array(out)


def _seeds(n, base=0):
    return np.stack([np.arange(base, base + n), np.full(n, 7)], axis=1)


def test_training_flip_is_random_per_image_and_seeded():
    images = _images((16, S, S, 3), seed=2)
    layer = ImagePreprocessor(S, random_flip=True)
    first = _flipped(layer(images, training=True, seeds=_seeds(16)).numpy(), images)
    assert 0 < first.sum() < len(first)
    # The seeds decide, nothing else: not the global seed, not the images' company in the batch.
    tf.random.set_seed(123)
    np.testing.assert_array_equal(
        _flipped(layer(images, training=True, seeds=_seeds(16)).numpy(), images), first)
    one = [_flipped(layer(im, training=True, seeds=sd).numpy()[None], im[None])[0]
           for im, sd in zip(images, _seeds(16))]
    np.testing.assert_array_equal(one, first)
    assert (_flipped(layer(images, training=True, seeds=_seeds(16, 100)).numpy(), images)
            != first).any()
    off = ImagePreprocessor(S, random_flip=False)(images, training=True, seeds=_seeds(16)).numpy()
    np.testing.assert_array_equal(off, images)
    # Evaluation never flips.
    np.testing.assert_array_equal(layer(images).numpy(), images)


def test_training_batched_crops_each_image():
    images = np.stack([_images((R, R, 3), seed=i) for i in range(6)])
    got = ImagePreprocessor(S, R)(images, training=True, seeds=_seeds(6)).numpy()
    assert got.shape == (6, S, S, 3)
    for g, im in zip(got, images):
        windows = _windows(im)
        assert any(np.abs(g - w).max() < 3e-5 or np.abs(g - w[:, ::-1]).max() < 3e-5
                   for w in windows.values())


def test_in_tf_data_and_exported_function():
    images = (_images((5, 20, 17, 3), seed=4) * 255).astype(np.uint8)
    layer = ImagePreprocessor(S, R)
    ds = tf.data.Dataset.from_tensor_slices((images, _seeds(5))).map(
        lambda im, seed: layer(im, training=True, seeds=seed))
    for got in ds:
        assert got.shape == (S, S, 3) and got.dtype == tf.float32
    evaluated = np.stack(list(tf.data.Dataset.from_tensor_slices(images).map(layer)))
    np.testing.assert_array_equal(evaluated, layer(images).numpy())

    module = tf.Module()
    module.embed = tf.function(lambda x: {"pixels": layer(x)}, input_signature=[ANY_IMAGES])
    floats = images / np.float32(255)
    np.testing.assert_array_equal(module.embed(floats)["pixels"].numpy(), layer(floats).numpy())


def test_config_round_trip_and_checks():
    layer = ImagePreprocessor(S, R, random_flip=False, crop_window_resize=False, name="pre")
    config = layer.get_config()
    assert {k: config[k] for k in ("image_size", "resize_size", "random_flip",
                                   "crop_window_resize")} == {
        "image_size": S, "resize_size": R, "random_flip": False, "crop_window_resize": False}
    clone = ImagePreprocessor.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, ImagePreprocessor) and restored.get_config() == config
    assert ImagePreprocessor(S, 0).resize_size is None
    with pytest.raises(ValueError, match="smaller than image_size"):
        ImagePreprocessor(S, S - 1)
    with pytest.raises(ValueError, match="images must be"):
        layer(np.zeros((S, S), np.float32))
    with pytest.raises(ValueError, match="training=True needs seeds"):
        layer(np.zeros((S, S, 3), np.float32), training=True)
    with pytest.raises(ValueError, match=r"seeds must be \[2\] for one image, \[B, 2\]"):
        layer(np.zeros((2, S, S, 3), np.float32), training=True, seeds=[1, 2])


def test_float32_under_mixed_precision():
    images = _images((2, 11, 13, 3), seed=6)
    want = ImagePreprocessor(S, R)(images).numpy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        got = ImagePreprocessor(S, R)(images)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert got.dtype == tf.float32
    np.testing.assert_array_equal(got.numpy(), want)
