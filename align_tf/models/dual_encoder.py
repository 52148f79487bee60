"""The ALIGN dual encoder and its distributed train step.

``DualEncoder`` owns the two towers and the learnable temperature σ (init 1.0). Its ``train_step``
runs once per replica (``strategy.run`` or ``model.fit``): it embeds the local batch, gathers every
replica's embeddings with ``ReplicaContext.all_gather`` (differentiable, so gradients reach the
replica that produced each negative), evaluates ``align_tf.losses.align_loss`` on local rows against
the global batch, all-reduces the gradients once, and applies them.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from align_tf import losses
from align_tf.models.efficientnet import efficientnet
from align_tf.models.text_encoder import bert_text_encoder


class DualEncoder(keras.Model):
    """Image tower + text tower with L2-normalised embeddings and logits = cosine / σ.

    Args:
      image_encoder: maps ``(B, H, W, 3)`` pixels in [0, 1] to ``(B, D)``.
      text_encoder: maps ``{"token_ids", "padding_mask", "segment_ids"}`` to ``(B, D)``.
      temperature_init: initial σ (the paper's 1.0).
      min_temperature: σ is clipped from below in the logits so it can never reach zero.
      label_smoothing: ε of the loss targets.
    """

    def __init__(self, image_encoder, text_encoder, temperature_init=1.0, min_temperature=1e-3,
                 label_smoothing=0.1, **kwargs):
        super().__init__(**kwargs)
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.min_temperature = min_temperature
        self.label_smoothing = label_smoothing
        # float32 and not autocast: σ is a single scalar that must keep precision under bf16.
        self.temperature = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(temperature_init), dtype="float32",
            autocast=False, name="temperature")
        # Steps whose loss or gradients were not finite: skipped (weights untouched), counted.
        self.skipped_steps = self.add_weight(shape=(), initializer="zeros", dtype="int64",
                                             trainable=False, aggregation="only_first_replica",
                                             name="skipped_steps")
        self.consecutive_skips = self.add_weight(shape=(), initializer="zeros", dtype="int64",
                                                 trainable=False, aggregation="only_first_replica",
                                                 name="consecutive_skips")
        self.built = True  # both towers are built functional models; nothing is created lazily

    def compile(self, optimizer="adam", **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        skip_optimizer_all_reduce(self.optimizer)

    def embed_image(self, pixels, training=False):
        """``(B, H, W, 3)`` pixels in [0, 1] → ``(B, D)`` unit-norm float32 embeddings."""
        return losses.l2_normalize(self.image_encoder(pixels, training=training))

    def embed_text(self, tokens, training=False):
        """Tokenized text dict → ``(B, D)`` unit-norm float32 embeddings."""
        return losses.l2_normalize(self.text_encoder(tokens, training=training))

    def logit_scale(self):
        """1/σ, with σ clipped at ``min_temperature``."""
        return 1.0 / tf.maximum(self.temperature, self.min_temperature)

    def call(self, inputs, training=False):
        image = self.embed_image(inputs["image"], training=training)
        text = self.embed_text(inputs["text"], training=training)
        return {"image_embeddings": image, "text_embeddings": text,
                "logits_per_image": tf.matmul(image, text, transpose_b=True) * self.logit_scale()}

    def compute_contrastive_loss(self, image, text, data=None):
        """Loss of this replica's embeddings against the embeddings gathered from all replicas.

        ``data`` is the replica's raw batch (unused here; subclasses embed it with other towers).
        Subclasses may put a nest of tensors under ``"after_apply"`` in the returned dict; it is
        handed to ``after_apply`` once the step's update has been applied.
        """
        ctx = tf.distribute.get_replica_context()
        num_replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        if num_replicas > 1:
            all_image = ctx.all_gather(image, axis=0)
            all_text = ctx.all_gather(text, axis=0)
            offset = ctx.replica_id_in_sync_group * tf.shape(image)[0]
        else:
            all_image, all_text, offset = image, text, 0
        out = losses.align_loss(image, text, tf.maximum(self.temperature, self.min_temperature),
                                all_image, all_text, offset, self.label_smoothing)
        return out, num_replicas

    def train_step(self, data):
        """One optimizer step on this replica's share ``{"image", "text"}`` of the global batch."""
        with tf.GradientTape() as tape:
            image = self.embed_image(data["image"], training=True)
            text = self.embed_text(data["text"], training=True)
            out, num_replicas = self.compute_contrastive_loss(image, text, data)
            # Each replica's loss is a mean over its local rows; the global loss is their mean.
            scaled_loss = out["loss"] / num_replicas
        variables = self.trainable_variables
        grads = tape.gradient(scaled_loss, variables)
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and num_replicas > 1:
            grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        grad_norm = tf.linalg.global_norm(grads)
        # Gradients are all-reduced, so every replica takes the same branch.
        finite = tf.math.is_finite(grad_norm) & tf.math.is_finite(out["loss"])
        self._apply_if_finite(finite, grads, variables, out.get("after_apply", ()))
        accuracy = tf.reduce_mean(tf.cast(
            tf.equal(tf.argmax(out["logits_i2t"], axis=-1, output_type=tf.int32), out["labels"]),
            tf.float32))
        return {"loss": out["loss"], "loss_i2t": out["loss_i2t"], "loss_t2i": out["loss_t2i"],
                "temperature": tf.identity(self.temperature), "grad_norm": grad_norm,
                "i2t_accuracy": accuracy, "skipped_steps": tf.cast(self.skipped_steps, tf.float32),
                "consecutive_skips": tf.cast(self.consecutive_skips, tf.float32)}

    def after_apply(self, state):
        """Hook run in replica context right after an optimizer update (never on a skipped step).

        ``state`` is the ``"after_apply"`` entry of ``compute_contrastive_loss``'s output. The
        default does nothing; ``MomentumDualEncoder`` updates its EMA towers and queue here.
        """
        del state

    def _apply_if_finite(self, finite, grads, variables, after_apply_state=()):
        """Applies the update only when ``finite``; otherwise counts a skipped step."""
        def apply_on_replica(grads, state):
            self.optimizer.apply(grads, variables)
            self.after_apply(state)

        def apply():
            apply_on_replica(grads, after_apply_state)
            self.consecutive_skips.assign(0)

        def skip():
            self.skipped_steps.assign_add(1)
            self.consecutive_skips.assign_add(1)

        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            tf.cond(finite, apply, skip)
            return

        # MirroredStrategy's optimizer update calls merge_call, which cannot sit inside a cond in
        # replica context: take the branch in cross-replica context (as Keras' LossScaleOptimizer).
        def cross_replica(strategy, finite, grads, state):
            finite = strategy.experimental_local_results(finite)[0]

            def apply_all():
                strategy.extended.call_for_each_replica(apply_on_replica, args=(grads, state))
                self.consecutive_skips.assign(0)

            tf.cond(finite, apply_all, skip)

        tf.distribute.get_replica_context().merge_call(
            cross_replica, args=(finite, grads, after_apply_state))


def skip_optimizer_all_reduce(optimizer):
    """Makes a Keras optimizer trust that gradients are already all-reduced.

    Keras' TF optimizer sums gradients across replicas inside ``apply``. ``DualEncoder.train_step``
    reduces them itself (once) so the gradient norm it logs, and any finiteness check, sees the
    global gradient; without this the optimizer would sum a second time.
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    inner._all_reduce_sum_gradients = lambda grads_and_vars: list(grads_and_vars)
    return optimizer


def build_dual_encoder(model_config, vocabulary_size: int) -> DualEncoder:
    """Builds a ``DualEncoder`` from a config's ``model`` section (see ``configs/``).

    With ``model.momentum_distillation`` it is a ``MomentumDualEncoder`` (ALBEF's ITC-MoD).
    ``model.image_architecture`` / ``model.text_architecture``, when set (converted checkpoints, see
    ``align_tf.convert.hf_align``), spell out the towers field by field and win over the size names.
    """
    image_arch = model_config.get("image_architecture") or model_config.image_size_name
    text_arch = model_config.get("text_architecture") or model_config.text_size_name
    image_encoder = efficientnet(image_arch, image_size=None,
                                 drop_connect_rate=model_config.get("drop_connect_rate"),
                                 sync_batch_norm=model_config.get("sync_batch_norm", False),
                                 bn_momentum=model_config.get("bn_momentum", 0.99))
    embed_dim = image_encoder.output_shape[-1]
    text_encoder = bert_text_encoder(text_arch, vocabulary_size=vocabulary_size,
                                     embed_dim=embed_dim,
                                     max_sequence_length=model_config.max_sequence_length,
                                     dropout=model_config.text_dropout)
    kwargs = dict(temperature_init=model_config.temperature_init,
                  label_smoothing=model_config.label_smoothing, name="align")
    if model_config.get("momentum_distillation", False):
        from align_tf.models.momentum import MomentumDualEncoder  # it subclasses DualEncoder
        return MomentumDualEncoder(
            image_encoder, text_encoder, momentum=model_config.distillation_momentum,
            alpha=model_config.distillation_alpha,
            alpha_ramp_steps=model_config.distillation_alpha_ramp_steps,
            queue_size=model_config.distillation_queue_size, **kwargs)
    return DualEncoder(image_encoder, text_encoder, **kwargs)
