"""The ALIGN dual encoder: two towers, L2-normalised embeddings, and the learnable similarity scale.

The model is plain: it embeds and scores, and holds only what export needs (the towers and the
parameters that turn cosines into logits: σ for ALIGN's softmax, or SigLIP's t′ and b).
How a batch becomes gradients (the loss, the cross-replica gather, the optimizer update, momentum
towers and queues) belongs to an objective in ``align_tf.objectives``.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from align_tf import losses
from align_tf.models.efficientnet import efficientnet
from align_tf.models.fusion import Fusion
from align_tf.models.text_encoder import bert_text_encoder, split_for_fusion


SIMILARITIES = ("softmax", "sigmoid")  # config.model.similarity


@keras.saving.register_keras_serializable(package="align_tf")
class Clamp(keras.constraints.Constraint):
    """Clamps a weight into ``[low, high]`` (``None``: unbounded on that side).

    As a variable's ``constraint``, Keras' optimizers apply it right after each update of the
    variable (so never on a skipped step). CLIP and ALBEF clamp their temperature this way: the
    loss sees the parameter itself, so its gradient keeps flowing at the bound, where a clip
    inside the loss would stop it (and let momentum carry the parameter further out for good).
    """

    def __init__(self, low=None, high=None):
        self.low = None if low is None else float(low)
        self.high = None if high is None else float(high)

    def __call__(self, w):
        w = tf.convert_to_tensor(w)
        if self.low is not None:
            w = tf.maximum(w, tf.cast(self.low, w.dtype))
        if self.high is not None:
            w = tf.minimum(w, tf.cast(self.high, w.dtype))
        return w

    def get_config(self):
        return {"low": self.low, "high": self.high}


class DualEncoder(keras.Model):
    """Image tower + text tower with L2-normalised embeddings and logits from their cosines.

    ``similarity`` says how cosines become logits, i.e. which loss the model is trained with and
    what its scores mean:

    * ``"softmax"`` (ALIGN): ``logits = cos / σ`` with the learnable temperature σ
      (``temperature``); probabilities are a softmax over the candidates.
    * ``"sigmoid"`` (SigLIP): ``logits = t · cos + b`` with t = exp(t′) (``log_logit_scale``) and
      the bias b (``logit_bias``); sigmoid(logit) is each pair's own match probability.

    Only the chosen kind's parameters exist (a sigmoid model has no σ).

    Args:
      image_encoder: maps ``(B, H, W, 3)`` pixels in [0, 1] to ``(B, D)``.
      text_encoder: maps ``{"token_ids", "padding_mask", "segment_ids"}`` to ``(B, D)``.
      temperature_init: initial σ (the paper's 1.0); softmax only.
      min_temperature, max_temperature: bounds of the temperature (``max_temperature`` ``None``:
        none above), enforced on the parameter after every optimizer update (``Clamp``): σ in
        ``[min, max]`` (ALBEF: [0.001, 0.5]), or for a sigmoid model 1/t, i.e.
        t′ in ``[-log max, -log min]`` (the same cap 1/min_temperature on the cosines' factor).
        The softmax logits also clip σ to the bounds, for a σ restored from outside them.
      similarity: ``"softmax"`` or ``"sigmoid"``.
      logit_scale_init: initial t (SigLIP: 10, i.e. t′ = log 10); sigmoid only.
      logit_bias_init: initial b (SigLIP: -10); sigmoid only.
      fusion: ALBEF's multimodal part (``align_tf.models.fusion.Fusion``: image tokens, fusion
        encoder, ITM head) over these towers, or ``None`` for a plain dual encoder.
    """

    def __init__(self, image_encoder, text_encoder, temperature_init=1.0, min_temperature=1e-3,
                 similarity="softmax", logit_scale_init=10.0, logit_bias_init=-10.0, fusion=None,
                 max_temperature=None, **kwargs):
        super().__init__(**kwargs)
        if similarity not in SIMILARITIES:
            raise ValueError(f"unknown similarity {similarity!r}; choose from {list(SIMILARITIES)}")
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.temperature_init = float(temperature_init)
        self.min_temperature = float(min_temperature)
        self.max_temperature = None if max_temperature is None else float(max_temperature)
        if not 0 < self.min_temperature <= (self.max_temperature or math.inf):
            raise ValueError(f"temperature bounds [{min_temperature}, {max_temperature}] must "
                             "satisfy 0 < min <= max")
        self.similarity = similarity
        self.logit_scale_init = float(logit_scale_init)
        self.logit_bias_init = float(logit_bias_init)
        self.fusion = fusion

        def scalar(value, name, constraint=None):
            # float32 and not autocast: a single scalar that must keep precision under bf16.
            return self.add_weight(shape=(), initializer=keras.initializers.Constant(value),
                                   dtype="float32", autocast=False, name=name,
                                   constraint=constraint)

        if similarity == "softmax":
            self.temperature = scalar(temperature_init, "temperature",
                                      Clamp(self.min_temperature, self.max_temperature))
        else:
            self.temperature = None
            # t learned as its log (SigLIP), so it stays positive and moves by relative steps;
            # t = 1/temperature, so t′ = -log(temperature) is bounded by the temperature's bounds.
            self.log_logit_scale = scalar(
                math.log(logit_scale_init), "log_logit_scale",
                Clamp(None if self.max_temperature is None else -math.log(self.max_temperature),
                      -math.log(self.min_temperature)))
            self.logit_bias = scalar(logit_bias_init, "logit_bias")
        self.built = True  # both towers are built functional models; nothing is created lazily

    @property
    def embedding_dim(self) -> int:
        return int(self.image_encoder.output_shape[-1])

    def embed_image(self, pixels, training=False):
        """``(B, H, W, 3)`` pixels in [0, 1] → ``(B, D)`` unit-norm float32 embeddings."""
        return losses.l2_normalize(self.image_encoder(pixels, training=training))

    def embed_text(self, tokens, training=False):
        """Tokenized text dict → ``(B, D)`` unit-norm float32 embeddings."""
        return losses.l2_normalize(self.text_encoder(tokens, training=training))

    def clipped_temperature(self):
        """σ clipped into ``[min_temperature, max_temperature]`` (what the loss and the logits
        use). Training keeps the parameter itself in the bounds (``Clamp``), so this changes
        nothing then, and the gradient at a bound still reaches σ."""
        temperature = tf.maximum(self.temperature, self.min_temperature)
        if self.max_temperature is not None:
            temperature = tf.minimum(temperature, self.max_temperature)
        return temperature

    def logit_scale(self):
        """The factor on the cosines: 1/σ (σ clipped at ``min_temperature``), or t = exp(t′)."""
        if self.similarity == "sigmoid":
            return tf.exp(self.log_logit_scale)
        return 1.0 / self.clipped_temperature()

    def logits(self, cosines):
        """Cosines → logits: ``cos / σ`` (softmax) or ``t · cos + b`` (sigmoid)."""
        logits = cosines * tf.cast(self.logit_scale(), cosines.dtype)
        if self.similarity == "sigmoid":
            logits += tf.cast(self.logit_bias, cosines.dtype)
        return logits

    def call(self, inputs, training=False):
        image = self.embed_image(inputs["image"], training=training)
        text = self.embed_text(inputs["text"], training=training)
        return {"image_embeddings": image, "text_embeddings": text,
                "logits_per_image": self.logits(tf.matmul(image, text, transpose_b=True))}

    def get_config(self):
        return {"name": self.name, "temperature_init": self.temperature_init,
                "min_temperature": self.min_temperature,
                "max_temperature": self.max_temperature, "similarity": self.similarity,
                "logit_scale_init": self.logit_scale_init, "logit_bias_init": self.logit_bias_init,
                "image_encoder": keras.saving.serialize_keras_object(self.image_encoder),
                "text_encoder": keras.saving.serialize_keras_object(self.text_encoder)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        towers = {k: keras.saving.deserialize_keras_object(config.pop(k))
                  for k in ("image_encoder", "text_encoder")}
        return cls(**towers, **config)


def build_dual_encoder(model_config, vocabulary_size: int, **image_tower_kwargs) -> DualEncoder:
    """Builds a ``DualEncoder`` from a config's ``model`` section (see ``configs/base.py``).

    With ``model.fusion_layers = k > 0`` (ALBEF) the BERT's last k layers become the fusion
    encoder (``text_encoder.split_for_fusion``) and the model gets a ``fusion`` part.

    ``model.image_architecture`` / ``model.text_architecture``, when set (converted checkpoints, see
    ``align_tf.convert.hf_align``), spell out the towers field by field and win over the size names.
    ``image_tower_kwargs`` go to ``efficientnet`` (e.g. ``fused_batch_norm=False`` to time the step
    without the fused kernels).
    """
    image_encoder = efficientnet(model_config.image_architecture or model_config.image_size_name,
                                 image_size=None, drop_connect_rate=model_config.drop_connect_rate,
                                 bn_group_size=model_config.bn_group_size,
                                 bn_momentum=model_config.bn_momentum,
                                 remat=model_config.remat, **image_tower_kwargs)
    text_size = model_config.text_architecture or model_config.text_size_name
    fusion_layers = model_config.fusion_layers
    if fusion_layers:
        text_size, fusion_size = split_for_fusion(text_size, fusion_layers)
    text_encoder = bert_text_encoder(
        text_size, vocabulary_size=vocabulary_size, embed_dim=image_encoder.output_shape[-1],
        max_sequence_length=model_config.max_sequence_length, dropout=model_config.text_dropout,
        remat=model_config.remat)
    fusion = None
    if fusion_layers:
        fusion = Fusion(image_encoder, text_encoder, fusion_size, dropout=model_config.text_dropout,
                        name="fusion")
    return DualEncoder(image_encoder, text_encoder, temperature_init=model_config.temperature_init,
                       min_temperature=model_config.min_temperature,
                       max_temperature=model_config.max_temperature,
                       similarity=model_config.similarity,
                       logit_scale_init=model_config.logit_scale_init,
                       logit_bias_init=model_config.logit_bias_init, fusion=fusion,
                       name="albef" if fusion_layers else "align")
