"""Image preprocessing of training, evaluation and export, as one Keras layer.

``ImagePreprocessor`` (modelled on keras-hub's ``ImageConverter``: one layer serves ``tf.data`` and
the exported SavedModel graph) maps uint8 or [0, 1] float RGB images to float32 ``image_size``
squares in [0, 1]. It follows the paper (§5): training takes a uniformly random ``image_size`` crop
of the image resized to ``resize_size`` (346 → 289) and flips it horizontally at random;
evaluation resizes to ``resize_size`` and takes the centre crop. Without ``resize_size`` both only
resize to ``image_size``. All resizes are antialiased bilinear
(``tf.image.resize(antialias=True)``).

Training draws each image's crop offset and flip with stateless ops from a seed the caller passes
per image (the input pipeline: a hash of the run's seed and the example's stream position, see
``align_tf.data.sampling``), so the augmentation of an example does not depend on which host
preprocesses it or on what ran before: a rerun and a resumed run draw the same crops.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from align_tf import compat


# Reduced-scale JPEG decoding: libjpeg's DCT scaling factors ``decode_jpeg(ratio=…)`` supports.
DCT_RATIOS = (8, 4, 2)


def decode_for_resize(encoded, resize_size: int):
    """Decodes image bytes at the smallest JPEG DCT scale that stays ≥ ``resize_size`` per side.

    A web JPEG is usually 2–4× the 346 px the paper resizes to; libjpeg can decode it at 1/2, 1/4
    or 1/8 scale in the DCT (``tf.io.decode_jpeg(ratio=…)``), skipping most of the inverse DCT,
    colour conversion and the pixels the antialiased resize would average away. The largest ratio
    keeping both sides ≥ ``resize_size`` is used, so the resize that follows is still a
    downscale (of less data). Non-JPEG images and JPEGs smaller than ``2 × resize_size`` decode at
    full scale, as ``tfrecord.decode_image`` does.

    Decoded pixel ``i`` covers full-scale pixels ``[r·i, r·i + r)``: full-scale continuous
    coordinates are ``r`` times decoded ones. The resize geometry therefore uses the full-scale
    size divided by ``r`` (``sizes``; not the decoded shape, which rounds partial blocks up), and
    the crop of the 346 px image lands where the full-scale path puts it.

    Args:
      encoded: scalar string, JPEG/PNG/GIF/BMP bytes.
      resize_size: the side the image will be resized to.

    Returns:
      ``(image, sizes)``: uint8 ``(h, w, 3)``, and float32 ``[2]`` the full-scale height and
      width in decoded pixels (``[H / r, W / r]``). Fails on undecodable or empty images.
    """
    def full():
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return image, tf.cast(tf.shape(image)[:2], tf.float32)

    def reduced():
        shape = tf.image.extract_jpeg_shape(encoded)[:2]
        short = tf.reduce_min(shape)
        # switch_case branch i decodes at DCT_RATIOS[i]; the last branch is full scale.
        fits = [short >= r * resize_size for r in DCT_RATIOS]
        index = tf.reduce_min(tf.where(tf.stack(fits + [tf.constant(True)]))[:, 0])
        ratios = DCT_RATIOS + (1,)
        image = tf.switch_case(tf.cast(index, tf.int32), [
            (lambda r=r: tf.io.decode_jpeg(encoded, channels=3, ratio=r)) for r in ratios])
        image.set_shape([None, None, 3])
        ratio = tf.gather(tf.constant(ratios, tf.float32), index)
        return image, tf.cast(shape, tf.float32) / ratio

    image, sizes = tf.cond(tf.io.is_jpeg(encoded), reduced, full)
    tf.debugging.assert_positive(tf.reduce_prod(tf.shape(image)[:2]), "empty image")
    return image, sizes


def crop_of_resized(image, image_size: int, resize_size: int, offset, sizes=None):
    """``resize(image, resize_size)[y:y + image_size, x:x + image_size]`` computing only the crop.

    The window is computed with the kernel ``tf.image.resize(antialias=True)`` uses
    (``ScaleAndTranslate``, triangle), translated by the crop offset, straight from the image's
    pixels (uint8 ones without a float copy). That equals resize-then-crop up to float rounding
    (~3e-5) at a fraction of the cost: the full 346 px resize was most of the per-image time.

    Args:
      image: uint8 or [0, 1] float ``(H, W, 3)``.
      image_size, resize_size: the crop side, and the side of the (virtual) resized square.
      offset: int32 ``(y, x)`` of the crop in resized pixels, each in
        ``[0, resize_size - image_size]``.
      sizes: float ``[2]``, the height and width the resize maps to ``resize_size``, in pixels
        of ``image`` (``decode_for_resize``'s, for a reduced-scale decode); default the shape.

    Returns:
      float32 ``(image_size, image_size, 3)`` in [0, 1].
    """
    shape = tf.cast(tf.shape(image)[:2], tf.float32) if sizes is None else sizes
    if image.dtype == tf.uint8:
        scale = 1.0 / 255.0  # ScaleAndTranslate reads uint8 and returns float32
    else:
        image, scale = tf.image.convert_image_dtype(image, tf.float32), 1.0
    window = tf.raw_ops.ScaleAndTranslate(
        images=image[None], size=tf.constant([image_size, image_size]),
        scale=float(resize_size) / shape, translation=-tf.cast(offset, tf.float32),
        kernel_type="triangle", antialias=True)[0]
    return tf.clip_by_value(window * scale, 0.0, 1.0)


@keras.saving.register_keras_serializable(package="align_tf")
class ImagePreprocessor(keras.layers.Layer):
    """Images → float32 ``(…, image_size, image_size, 3)`` in [0, 1], training or evaluation.

    Args:
      image_size: side of the square output (the image tower's input; the paper: 289).
      resize_size: side the image is resized to before the crop (the paper: 346). ``None``, 0 or
        ``image_size``: no crop, images are resized straight to ``image_size``.
      random_flip: training flips each image horizontally with probability 1/2.
      crop_window_resize: training computes only the crop window of the resized image
        (``crop_of_resized``); ``False`` resizes the whole image and then crops (the same crop up
        to float rounding, slower; ``benchmarks/bench_input_pipeline.py --before`` times it).
      **kwargs: ``keras.layers.Layer`` arguments (``name``, ...).

    Call arguments:
      images: one image ``(H, W, 3)`` or a batch ``(B, H, W, 3)`` of equal-sized images; uint8, or
        float in [0, 1].
      training: random crop and flip instead of the centre crop.
      seeds: with ``training``, the stateless seed of each image's crop and flip: int ``[2]`` for
        one image, ``[B, 2]`` for a batch (the input pipeline derives them from the example's
        stream position, ``sampling.example_seed``). The same seed gives the same crop and flip on
        any host; the crop offset is uniform over the valid offsets, the flip has p = 1/2.
      sizes: with ``training`` and one image, float ``[2]``: the height and width the resize
        geometry uses, in pixels of ``images`` (``decode_for_resize``'s for a reduced-scale
        decode); default the image's shape.

    Evaluation skips the resize of images already ``image_size`` square, and clips to [0, 1]
    after a crop; a single image gives exactly the numbers of the same image in a batch.
    """

    def __init__(self, image_size: int, resize_size: int | None = None, random_flip: bool = True,
                 crop_window_resize: bool = True, **kwargs):
        # No autocast: under a mixed-precision policy float pixels must still be resized in
        # float32 (the numbers of training and export must not depend on the policy).
        super().__init__(autocast=False, **kwargs)
        # Like keras-hub's preprocessing layers: numpy/uint8 inputs reach `call` unconverted.
        compat.accept_raw_call_args(self)
        self.image_size = int(image_size)
        self.resize_size = int(resize_size) if resize_size else None
        if self.resize_size is not None and self.resize_size < self.image_size:
            raise ValueError(f"resize_size {self.resize_size} is smaller than image_size "
                             f"{self.image_size}")
        self.random_flip = bool(random_flip)
        self.crop_window_resize = bool(crop_window_resize)
        self.built = True

    @property
    def _crops(self) -> bool:
        return self.resize_size is not None and self.resize_size > self.image_size

    def call(self, images, training=False, seeds=None, sizes=None):
        images = tf.convert_to_tensor(images)
        if images.shape.rank not in (3, 4):
            raise ValueError(f"images must be (H, W, 3) or (B, H, W, 3); got shape {images.shape}")
        if not training:
            return self._evaluate(images[None])[0] if images.shape.rank == 3 else \
                self._evaluate(images)
        if seeds is None:
            raise ValueError("training=True needs seeds: one stateless [2] seed per image")
        seeds = tf.convert_to_tensor(seeds)
        if seeds.shape.rank != images.shape.rank - 2 or seeds.shape[-1] != 2:
            raise ValueError(f"seeds must be [2] for one image, [B, 2] for a batch; got shape "
                             f"{seeds.shape} for images {images.shape}")
        if images.shape.rank == 3:
            return self._train_one(images, seeds, sizes)
        if sizes is not None:
            raise ValueError("sizes is for one image (a reduced-scale decode), not a batch")
        side = self.image_size
        return tf.map_fn(lambda args: self._train_one(*args), (images, seeds),
                         fn_output_signature=tf.TensorSpec([side, side, 3], tf.float32))

    def _evaluate(self, images):
        """Batched evaluation preprocessing of ``(B, H, W, 3)``."""
        images = tf.image.convert_image_dtype(images, tf.float32)
        s = self.image_size
        if not self._crops:
            height, width = images.shape[1:3]
            if height is not None and width is not None:
                if height == s and width == s:
                    return images
                return tf.image.resize(images, (s, s), antialias=True)
            shape = tf.shape(images)
            same = tf.logical_and(tf.equal(shape[1], s), tf.equal(shape[2], s))
            out = tf.cond(same, lambda: tf.identity(images),
                          lambda: tf.image.resize(images, (s, s), antialias=True))
            out.set_shape([images.shape[0], s, s, 3])
            return out
        r = self.resize_size
        images = tf.image.resize(images, (r, r), antialias=True)
        offset = (r - s) // 2
        return tf.clip_by_value(images[:, offset:offset + s, offset:offset + s, :], 0.0, 1.0)

    def _train_one(self, image, seed, sizes=None):
        """Random crop (and flip) of one ``(H, W, 3)`` image, drawn from its ``[2]`` seed;
        ``sizes``: see ``crop_of_resized``."""
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        s, r = self.image_size, self.resize_size
        if not self._crops:
            image = self._evaluate(image[None])[0]
        else:
            offset = tf.random.stateless_uniform((2,), crop_seed, minval=0, maxval=r - s + 1,
                                                 dtype=tf.int32)
            if self.crop_window_resize:
                image = crop_of_resized(image, s, r, offset, sizes)
            elif sizes is not None:
                raise ValueError("sizes (a reduced-scale decode) needs crop_window_resize")
            else:
                image = tf.image.convert_image_dtype(image, tf.float32)
                image = tf.image.resize(image, (r, r), antialias=True)
                image = tf.slice(image, tf.concat([offset, [0]], 0), (s, s, 3))
                image = tf.clip_by_value(image, 0.0, 1.0)
        if self.random_flip:
            image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        return image

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(image_size=self.image_size, resize_size=self.resize_size,
                      random_flip=self.random_flip, crop_window_resize=self.crop_window_resize)
        return config
