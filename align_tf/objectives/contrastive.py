"""ALIGN's objective (Jia et al., 2021, §4.1): the normalized softmax loss over the global batch.

Each replica embeds its share of the batch, gathers every replica's embeddings once
(``GlobalBatch``) and evaluates ``align_tf.losses.align_loss`` for its own rows against all
gathered columns (the "local loss": O(N_local × N_global) logits per replica).
"""

from __future__ import annotations

import tensorflow as tf

from align_tf import losses
from align_tf.errors import check
from align_tf.objectives.base import GlobalBatch, Objective
from align_tf.objectives.registry import register_objective


@register_objective("contrastive")
class ContrastiveObjective(Objective):
    """``loss = L_i2t + L_t2i`` with σ from the model and label smoothing ε.

    Args:
      model, optimizer: as for ``Objective``.
      label_smoothing: ε of the smoothed one-hot targets (the paper: 0.1).
    """

    scalars = Objective.scalars + ("loss_i2t", "loss_t2i", "temperature", "i2t_accuracy")
    supports_accumulation = True
    config_fields = ("label_smoothing",)

    def __init__(self, model, optimizer, label_smoothing: float = 0.1):
        super().__init__(model, optimizer)
        self.label_smoothing = float(label_smoothing)

    @classmethod
    def validate(cls, config) -> None:
        o = config.objective[cls.name]
        check(0.0 <= o.label_smoothing < 1.0,
              f"objective.{cls.name}.label_smoothing={o.label_smoothing} must be in [0, 1)")

    def loss_from_embeddings(self, batch, embeddings) -> dict:
        image, text = embeddings
        rows = GlobalBatch(image)
        out = losses.align_loss(image, text, self.model.clipped_temperature(),
                                rows.gather(image), rows.gather(text), rows.offset,
                                self.label_smoothing)
        return self.with_metrics(out)

    def with_metrics(self, out: dict) -> dict:
        """Adds σ and the in-batch image→text top-1 accuracy to a loss dict."""
        accuracy = tf.reduce_mean(tf.cast(
            tf.equal(tf.argmax(out["logits_i2t"], axis=-1, output_type=tf.int32), out["labels"]),
            tf.float32))
        return dict(out, temperature=tf.identity(self.model.temperature), i2t_accuracy=accuracy)
