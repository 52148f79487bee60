"""SigLIP's objective (Zhai et al., 2023): the pairwise sigmoid loss over the global batch.

Each replica embeds its share of the batch and evaluates ``align_tf.losses.sigmoid_loss``: its
images against every replica's texts, one replica's texts at a time, so a replica holds
O(N_local²) logits, never O(N_local × N_global). The scale t = exp(t′) and the bias b live in the
model (``model.similarity = "sigmoid"``), because export scores with them.
"""

from __future__ import annotations

import tensorflow as tf

from align_tf import losses
from align_tf.objectives.base import Objective
from align_tf.objectives.registry import register_objective


@register_objective("sigmoid")
class SigmoidObjective(Objective):
    """``loss = -(1/N) Σ_i Σ_j log σ(z_ij (t · x_iᵀ y_j + b))`` with t and b from the model.

    Args:
      model: a ``DualEncoder`` with ``similarity == "sigmoid"``.
      optimizer: as for ``Objective``.
    """

    scalars = Objective.scalars + ("logit_scale", "logit_bias", "i2t_accuracy")
    supports_accumulation = True
    similarity = "sigmoid"  # t′ and b are the model's (export scores with them)

    def __init__(self, model, optimizer):
        if model.similarity != "sigmoid":
            raise ValueError(f"the sigmoid objective needs a model with similarity='sigmoid' "
                             f"(its t′ and b); got {model.similarity!r}")
        super().__init__(model, optimizer)

    def loss_from_embeddings(self, batch, embeddings) -> dict:
        image, text = embeddings
        scale = self.model.logit_scale()
        out = losses.sigmoid_loss(image, text, scale, self.model.logit_bias)
        return dict(out, logit_scale=tf.stop_gradient(scale),
                    logit_bias=tf.identity(self.model.logit_bias))
