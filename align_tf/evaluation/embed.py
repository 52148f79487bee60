"""Batched embedding of image arrays and strings with a trained ``DualEncoder``."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from align_tf.data.pipeline import preprocess_image


def embed_images(model, images, image_size: int, batch_size: int = 256) -> np.ndarray:
    """uint8 or [0, 1] float images ``(N, H, W, 3)`` → ``(N, D)`` unit-norm embeddings."""
    fn = tf.function(lambda x: model.embed_image(x, training=False), reduce_retracing=True)
    out = []
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start:start + batch_size])
        batch = tf.map_fn(lambda im: preprocess_image(im, image_size), batch,
                          fn_output_signature=tf.float32)
        out.append(fn(batch).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.image_encoder.output_shape[-1]))


def embed_texts(model, preprocessor, texts, batch_size: int = 256) -> np.ndarray:
    """Strings → ``(N, D)`` unit-norm embeddings (tokenized with ``preprocessor``)."""
    fn = tf.function(lambda t: model.embed_text(preprocessor(t), training=False),
                     reduce_retracing=True)
    texts = list(texts)
    out = [fn(tf.constant(texts[s:s + batch_size])).numpy() for s in range(0, len(texts), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.image_encoder.output_shape[-1]))
