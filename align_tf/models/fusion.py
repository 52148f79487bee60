"""ALBEF's multimodal part (Li et al., NeurIPS 2021, "Align before Fuse"): image tokens, the fusion
encoder with cross-attention, and the image-text matching (ITM) head.

ALBEF splits one BERT of L layers: the first L − k layers stay the text tower (the ``DualEncoder``'s
``text_encoder``, whose [CLS] gives the unimodal text embedding the contrastive loss aligns), and the
last k layers become the *fusion encoder*: each is a BERT layer (self-attention over the text, then
feed-forward) with a cross-attention block between them that attends to the image tokens
(``text_encoder.split_for_fusion``). The fusion encoder's [CLS] feeds the ITM head, a binary
classifier "does this text describe this image".

Image tokens are the EfficientNet's last-stage feature map before pooling: H′ × W′ positions
(9 × 9 × 640 for B7 at 289 px; 2 × 2 for the 48 px nano tower), projected to the text width by a
linear layer and a LayerNorm (ALBEF's ViT tokens already have BERT's width; a CNN's do not).

Everything here is part of the model, because the exported ``image_text_match`` and ITM re-ranking
need it; what only training needs (the MLM head, the momentum towers, the queue) belongs to the
objective (``align_tf.objectives.albef``).

``Fusion`` reads the towers' intermediate outputs through functional *views* sharing the towers'
layers (one forward pass gives both the pooled embedding and the tokens/states). The views are kept
outside Keras' tracking, so the towers' variables are owned (and checkpointed) once, by the towers.
"""

from __future__ import annotations

import keras
import keras_hub

from align_tf import losses
from align_tf.models.flat_einsum import flatten_einsum_dense
from align_tf.models.text_encoder import BertSize


def _init():
    return keras.initializers.TruncatedNormal(stddev=0.02)


class _Views:
    """Functional views of the towers: ``image(pixels) -> (pooled, feature map)`` and
    ``text(tokens) -> ([CLS] features, last-layer states)``. Not a Keras object: untracked."""

    def __init__(self, image_encoder, text_encoder):
        feature_map = image_encoder.get_layer("avg_pool").input
        self.image = keras.Model(image_encoder.inputs, [image_encoder.output, feature_map])
        layers = [l for l in text_encoder.layers if l.name.startswith("transformer_layer_")]
        self.text = keras.Model(text_encoder.inputs, [text_encoder.output, layers[-1].output])


class Fusion(keras.Model):
    """Image-token projection, fusion encoder (k cross-attention BERT layers) and ITM head.

    Args:
      image_encoder, text_encoder: the ``DualEncoder``'s towers (read through views, not owned).
      size: the fusion part of the BERT (``text_encoder.split_for_fusion``): its ``num_layers`` is
        k; width, heads and feed-forward size are the text tower's.
      dropout: dropout of the fusion layers (the text tower's).
    """

    def __init__(self, image_encoder, text_encoder, size: BertSize, dropout: float = 0.1,
                 **kwargs):
        super().__init__(**kwargs)
        self.size, self.dropout_rate = size, float(dropout)
        hidden = size.hidden_dim
        channels = int(image_encoder.get_layer("avg_pool").input.shape[-1])
        feature_map = keras.Input((None, None, channels), name="feature_map")
        x = keras.layers.Reshape((-1, channels), name="flatten_positions")(feature_map)
        x = keras.layers.Dense(hidden, kernel_initializer=_init(), name="image_token_dense")(x)
        x = keras.layers.LayerNormalization(epsilon=size.layer_norm_epsilon,
                                            name="image_token_layer_norm")(x)
        self.image_token_projection = keras.Model(feature_map, x, name="image_token_projection")

        text_states = keras.Input((None, hidden), name="text_states")
        padding_mask = keras.Input((None,), dtype="int32", name="padding_mask")
        image_tokens = keras.Input((None, hidden), name="image_tokens")
        x = text_states
        for j in range(size.num_layers):
            # BERT layer + cross-attention: self-attention, cross-attention, feed-forward, each
            # post-LayerNorm with a residual (ALBEF's BertLayer with crossattention; keras-hub's
            # TransformerDecoder without the causal mask).
            x = keras_hub.layers.TransformerDecoder(
                intermediate_dim=size.intermediate_dim, num_heads=size.num_heads, dropout=dropout,
                activation="gelu", layer_norm_epsilon=size.layer_norm_epsilon,
                kernel_initializer=_init(), name=f"fusion_layer_{j}")(
                    x, image_tokens, decoder_padding_mask=padding_mask, use_causal_mask=False)
        self.encoder = keras.Model({"text_states": text_states, "padding_mask": padding_mask,
                                    "image_tokens": image_tokens}, x, name="fusion_encoder")
        flatten_einsum_dense(self.encoder)
        self.itm_head = keras.layers.Dense(2, kernel_initializer=_init(), name="itm_head")
        self.itm_head.build((None, hidden))
        self._views = _Views(image_encoder, text_encoder)
        self.built = True

    @property
    def hidden_dim(self) -> int:
        return self.size.hidden_dim

    def encode_image(self, pixels, training=False):
        """Pixels → ``(unit-norm embedding (B, D), image tokens (B, N, H))`` in one tower pass."""
        pooled, feature_map = self._views.image(pixels, training=training)
        return (losses.l2_normalize(pooled),
                self.image_token_projection(feature_map, training=training))

    def encode_text(self, tokens, training=False):
        """Tokens → ``(unit-norm embedding (B, D), text states (B, T, H))`` in one tower pass."""
        features, states = self._views.text(tokens, training=training)
        return losses.l2_normalize(features), states

    def fuse(self, text_states, padding_mask, image_tokens, training=False):
        """``(B, T, H)`` text states attending to ``(B, N, H)`` image tokens → ``(B, T, H)``."""
        return self.encoder({"text_states": text_states, "padding_mask": padding_mask,
                             "image_tokens": image_tokens}, training=training)

    def match_logits(self, text_states, padding_mask, image_tokens, training=False):
        """ITM logits ``(B, 2)`` (float32; column 1: "matches") of row-paired texts and images."""
        fused = self.fuse(text_states, padding_mask, image_tokens, training=training)
        return keras.ops.cast(self.itm_head(fused[:, 0, :]), "float32")

    def match_probability(self, pixels, tokens, training=False):
        """P(match) ``(B,)`` of row-paired images (pixels in [0, 1]) and tokenized texts."""
        _, image_tokens = self.encode_image(pixels, training=training)
        _, states = self.encode_text(tokens, training=training)
        logits = self.match_logits(states, tokens["padding_mask"], image_tokens, training)
        return keras.ops.softmax(logits, axis=-1)[:, 1]
