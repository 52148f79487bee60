"""ALIGN's normalized softmax loss (Jia et al., 2021, §4.1).

With L2-normalised image embeddings x_i and text embeddings y_j and a learnable temperature σ:

    L_i2t = -(1/N) Σ_i log( exp(x_iᵀ y_i / σ) / Σ_j exp(x_iᵀ y_j / σ) )
    L_t2i = -(1/N) Σ_i log( exp(y_iᵀ x_i / σ) / Σ_j exp(y_iᵀ x_j / σ) )
    Loss  = L_i2t + L_t2i                       (summed, as in the paper; σ shared)

with label smoothing 0.1 on the one-hot targets. The negatives j run over the *global* batch: every
replica gathers all embeddings and scores its own N_local rows against the N_global gathered keys
(the "local loss"), so logits cost O(N_local × N_global) memory instead of O(N_global²). The
positive of local row i sits at column ``label_offset + i`` where ``label_offset`` is the replica's
first row in the global batch.
"""

from __future__ import annotations

import tensorflow as tf


def l2_normalize(x: tf.Tensor) -> tf.Tensor:
    """L2-normalises the last axis in float32 (bf16 norms lose too much precision)."""
    return tf.math.l2_normalize(tf.cast(x, tf.float32), axis=-1, epsilon=1e-12)


def smoothed_cross_entropy(logits: tf.Tensor, labels: tf.Tensor, label_smoothing: float) -> tf.Tensor:
    """Mean softmax cross-entropy against one-hot(labels) smoothed to (1-ε)·onehot + ε/K."""
    num_classes = tf.shape(logits)[-1]
    targets = tf.one_hot(labels, num_classes, dtype=logits.dtype)
    targets = targets * (1.0 - label_smoothing) + label_smoothing / tf.cast(num_classes, logits.dtype)
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits))


def align_loss(image_embeddings: tf.Tensor,
               text_embeddings: tf.Tensor,
               temperature: tf.Tensor,
               all_image_embeddings: tf.Tensor | None = None,
               all_text_embeddings: tf.Tensor | None = None,
               label_offset=0,
               label_smoothing: float = 0.1) -> dict:
    """The paper's loss for one replica's rows against the global batch.

    Args:
      image_embeddings: ``(N_local, D)`` L2-normalised image embeddings of this replica.
      text_embeddings: ``(N_local, D)`` L2-normalised text embeddings of this replica.
      temperature: scalar σ (logits = cosine / σ).
      all_image_embeddings: ``(N_global, D)`` gathered image embeddings (negatives); defaults to the
        local ones (single replica).
      all_text_embeddings: ``(N_global, D)`` gathered text embeddings.
      label_offset: index of this replica's first row in the global batch.
      label_smoothing: ε of the smoothed one-hot targets.

    Returns:
      dict with ``loss`` (= i2t + t2i, mean over local rows), ``loss_i2t``, ``loss_t2i`` and
      ``logits_i2t`` (``(N_local, N_global)``).
    """
    if all_image_embeddings is None:
        all_image_embeddings = image_embeddings
    if all_text_embeddings is None:
        all_text_embeddings = text_embeddings
    temperature = tf.cast(temperature, tf.float32)
    logits_i2t = tf.matmul(image_embeddings, all_text_embeddings, transpose_b=True) / temperature
    logits_t2i = tf.matmul(text_embeddings, all_image_embeddings, transpose_b=True) / temperature
    labels = tf.range(tf.shape(image_embeddings)[0]) + tf.cast(label_offset, tf.int32)
    loss_i2t = smoothed_cross_entropy(logits_i2t, labels, label_smoothing)
    loss_t2i = smoothed_cross_entropy(logits_t2i, labels, label_smoothing)
    return {"loss": loss_i2t + loss_t2i, "loss_i2t": loss_i2t, "loss_t2i": loss_t2i,
            "logits_i2t": logits_i2t, "labels": labels}
