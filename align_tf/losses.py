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


def momentum_distillation_loss(image_embeddings: tf.Tensor,
                               text_embeddings: tf.Tensor,
                               temperature: tf.Tensor,
                               all_image_embeddings: tf.Tensor,
                               all_text_embeddings: tf.Tensor,
                               momentum_image_embeddings: tf.Tensor,
                               momentum_text_embeddings: tf.Tensor,
                               all_momentum_image_embeddings: tf.Tensor,
                               all_momentum_text_embeddings: tf.Tensor,
                               alpha,
                               label_offset=0,
                               label_smoothing: float = 0.1,
                               image_queue: tf.Tensor | None = None,
                               text_queue: tf.Tensor | None = None) -> dict:
    """ALIGN's loss with ALBEF's momentum-distillation soft targets (ITC-MoD, Li et al., 2021).

    The online logits are ``align_loss``'s (local rows against the gathered online embeddings),
    extended by the queued momentum features as extra negatives. Each row's target mixes the
    momentum model's own similarity distribution over the same columns with the smoothed one-hot:

        q_i2t = softmax(x̂_i ᵀ [ŷ_global; text_queue] / σ)       (x̂, ŷ: momentum embeddings)
        target_i2t = α · q_i2t + (1 − α) · ((1 − ε) · onehot + ε / K)
        loss_i2t = mean_i H(target_i2t, softmax(x_i ᵀ [y_global; text_queue] / σ))

    and symmetrically for t2i; ``loss = loss_i2t + loss_t2i`` (summed like ``align_loss``, where
    ALBEF averages). K = N_global + queue size. With ``alpha == 0`` and no queue the result equals
    ``align_loss`` exactly. σ is not trained through the targets (they are constants).

    Args:
      image_embeddings, text_embeddings: ``(N_local, D)`` online embeddings of this replica.
      temperature: scalar σ.
      all_image_embeddings, all_text_embeddings: ``(N_global, D)`` gathered online embeddings.
      momentum_image_embeddings, momentum_text_embeddings: ``(N_local, D)`` momentum embeddings of
        this replica's rows (no gradient).
      all_momentum_image_embeddings, all_momentum_text_embeddings: ``(N_global, D)`` gathered
        momentum embeddings.
      alpha: distillation weight α in [0, 1] (scalar, may be a tensor that ramps up).
      label_offset: index of this replica's first row in the global batch.
      label_smoothing: ε of the one-hot part of the targets.
      image_queue, text_queue: optional ``(Q, D)`` queued momentum embeddings (extra negatives).

    Returns:
      dict like ``align_loss``'s (``loss``, ``loss_i2t``, ``loss_t2i``, ``logits_i2t`` of shape
      ``(N_local, N_global + Q)``, ``labels``).
    """
    temperature = tf.cast(temperature, tf.float32)
    text_keys, image_keys = all_text_embeddings, all_image_embeddings
    text_keys_m, image_keys_m = all_momentum_text_embeddings, all_momentum_image_embeddings
    if text_queue is not None:
        text_keys = tf.concat([text_keys, text_queue], axis=0)
        text_keys_m = tf.concat([text_keys_m, text_queue], axis=0)
    if image_queue is not None:
        image_keys = tf.concat([image_keys, image_queue], axis=0)
        image_keys_m = tf.concat([image_keys_m, image_queue], axis=0)
    labels = tf.range(tf.shape(image_embeddings)[0]) + tf.cast(label_offset, tf.int32)
    alpha = tf.cast(alpha, tf.float32)
    # The targets are constants: no gradient into σ or the momentum features through them.
    temperature_m = tf.stop_gradient(temperature)

    def direction(queries, keys, queries_m, keys_m):
        logits = tf.matmul(queries, keys, transpose_b=True) / temperature
        num_classes = tf.shape(logits)[-1]
        # Same expression as smoothed_cross_entropy so that α = 0 reproduces align_loss bit for bit.
        one_hot = tf.one_hot(labels, num_classes, dtype=logits.dtype)
        one_hot = one_hot * (1.0 - label_smoothing) + label_smoothing / tf.cast(num_classes, logits.dtype)
        soft = tf.nn.softmax(tf.matmul(queries_m, keys_m, transpose_b=True) / temperature_m, axis=-1)
        targets = tf.stop_gradient(alpha * soft + (1.0 - alpha) * one_hot)
        loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits))
        return loss, logits

    loss_i2t, logits_i2t = direction(image_embeddings, text_keys,
                                     momentum_image_embeddings, text_keys_m)
    loss_t2i, _ = direction(text_embeddings, image_keys, momentum_text_embeddings, image_keys_m)
    return {"loss": loss_i2t + loss_t2i, "loss_i2t": loss_i2t, "loss_t2i": loss_t2i,
            "logits_i2t": logits_i2t, "labels": labels}
