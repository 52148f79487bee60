"""An image classifier on ALIGN's image tower: the tower plus a new linear head, for fine-tuning.

The paper's transfer recipe (§5, ImageNet / VTAB): train the head and fine-tune every layer of the
tower with the BatchNorm *statistics* frozen. Keras' ``trainable=False`` on a BatchNorm layer would
freeze its scale γ and offset β too, so the classifier instead always calls the tower in inference
mode: BatchNorm normalises with its moving statistics (which therefore never change), while γ, β
and every other weight still receive gradients. The tower's dropout and stochastic depth are off
as well (the nano/tiny sizes have none).

The head reads the L2-normalised image embedding, as zero-shot classification does, so it can
start from the zero-shot classifier (``initialize_head``): kernel = class embeddings / σ, bias 0.
Its logits then equal the zero-shot logits ``cos / σ`` and step 0 has zero-shot accuracy.
"""

from __future__ import annotations

import keras
import numpy as np

from align_tf import losses


class ImageClassifier(keras.Model):
    """``(B, H, W, 3)`` pixels in [0, 1] → ``(B, num_classes)`` float32 logits.

    Args:
      image_encoder: the image tower (``align_tf.models.efficientnet``), pixels → ``(B, D)``.
      num_classes: the head's outputs.
    """

    def __init__(self, image_encoder, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.image_encoder = image_encoder
        self.num_classes = int(num_classes)
        # float32 logits under a mixed-precision policy (the loss and softmax need them).
        self.head = keras.layers.Dense(self.num_classes, dtype="float32", name="head")
        self.head.build((None, self.embedding_dim))
        self.built = True

    @property
    def embedding_dim(self) -> int:
        return int(self.image_encoder.output_shape[-1])

    def embed_image(self, pixels, training=False):
        """Unit-norm float32 embeddings. ``training`` is ignored on purpose: the tower always runs
        in inference mode, so BatchNorm's moving statistics stay frozen while γ/β train."""
        del training
        return losses.l2_normalize(self.image_encoder(pixels, training=False))

    def call(self, pixels, training=False):
        return self.head(self.embed_image(pixels, training=training))

    def initialize_head(self, class_embeddings, logit_scale: float, bias: float = 0.0) -> None:
        """Head = the zero-shot classifier: ``kernel = class_embeddings.T · logit_scale``, every
        bias ``bias``.

        ``class_embeddings``: ``(num_classes, D)`` unit-norm (prompt-ensembled) text embeddings;
        ``logit_scale``: the model's ``1/σ`` (SigLIP: t); ``bias``: 0 (SigLIP: b).
        """
        class_embeddings = np.asarray(class_embeddings, np.float32)
        if class_embeddings.shape != (self.num_classes, self.embedding_dim):
            raise ValueError(f"class embeddings of shape {class_embeddings.shape}; the head needs "
                             f"{(self.num_classes, self.embedding_dim)}")
        self.head.kernel.assign(class_embeddings.T * np.float32(logit_scale))
        self.head.bias.assign(np.full(self.num_classes, bias, np.float32))

    def get_config(self):
        return {"name": self.name, "num_classes": self.num_classes,
                "image_encoder": keras.saving.serialize_keras_object(self.image_encoder)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        encoder = keras.saving.deserialize_keras_object(config.pop("image_encoder"))
        return cls(encoder, **config)
