"""Fine-tuning objective of an image classifier: softmax cross-entropy on class labels.

Used by ``python -m align_tf.finetune --task=classification`` with
``align_tf.models.classifier.ImageClassifier``; the distributed step (gradient all-reduce,
non-finite skip, update) is ``Objective.train_step``'s.
"""

from __future__ import annotations

import tensorflow as tf

from align_tf.objectives.base import Objective


class ClassificationObjective(Objective):
    """Mean cross-entropy of ``model(batch["image"])`` against ``batch["label"]``.

    Args:
      model, optimizer: as for ``Objective`` (``model`` maps pixels to class logits).
      label_smoothing: ε: the target puts 1 - ε + ε/C on the label and ε/C on every class.
    """

    scalars = Objective.scalars + ("accuracy",)

    def __init__(self, model, optimizer, label_smoothing: float = 0.0):
        super().__init__(model, optimizer)
        self.label_smoothing = float(label_smoothing)

    def compute_loss(self, batch, training=True) -> dict:
        logits = tf.cast(self.model(batch["image"], training=training), tf.float32)
        labels = tf.cast(batch["label"], tf.int32)
        targets = tf.one_hot(labels, tf.shape(logits)[-1])
        if self.label_smoothing:
            num_classes = tf.cast(tf.shape(logits)[-1], tf.float32)
            targets = targets * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(targets, logits))
        accuracy = tf.reduce_mean(tf.cast(
            tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.float32))
        return {"loss": loss, "accuracy": accuracy}
