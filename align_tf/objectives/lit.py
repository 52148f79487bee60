"""LiT (Zhai et al., 2022, "LiT: Zero-Shot Transfer with Locked-image text Tuning"): ALIGN's
contrastive loss with the image tower locked, so only the text tower (and σ) learn.

Locked means: no gradient reaches the tower, the optimizer keeps no slots for it (it is made
non-trainable), and it runs in inference mode, so its BatchNorm statistics, dropout and stochastic
depth do not move or draw either. Its weights are bit-identical after any number of steps.
"""

from __future__ import annotations

import tensorflow as tf

from align_tf.objectives.contrastive import ContrastiveObjective


def lock_image_tower(model) -> None:
    """Makes ``model.image_encoder`` non-trainable; call before building the optimizer."""
    model.image_encoder.trainable = False


class LockedImageObjective(ContrastiveObjective):
    """``ContrastiveObjective`` whose image embeddings come from the locked tower.

    Args:
      model: a softmax ``DualEncoder``; its image tower is locked here (``lock_image_tower``).
      optimizer, label_smoothing: as for ``ContrastiveObjective``.
    """

    def __init__(self, model, optimizer, label_smoothing: float = 0.1):
        if model.similarity != "softmax":
            raise ValueError("LiT here trains with ALIGN's softmax loss; the model has "
                             f"similarity={model.similarity!r}")
        lock_image_tower(model)
        super().__init__(model, optimizer, label_smoothing)

    def embed(self, batch, training=True):
        image = tf.stop_gradient(self.model.embed_image(batch["image"], training=False))
        return image, self.model.embed_text(batch["text"], training=training)
