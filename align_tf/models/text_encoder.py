"""BERT text tower (Devlin et al., 2019) as ALIGN uses it (paper §4.1).

The [CLS] output of the last layer goes through one linear layer ("text_projection") to the image
embedding size. The encoder is keras-hub's ``TransformerEncoder`` stack with keras-hub ``BertBackbone``
layer names, but with the *exact* GELU of BERT and of the public ALIGN checkpoint (keras-hub's
``BertBackbone`` hard-codes the tanh approximation, which would break weight parity).
"""

from __future__ import annotations

import dataclasses

import keras
import keras_hub

from align_tf.models.fields import dataclass_from_mapping, named_size
from align_tf.models.flat_einsum import flatten_einsum_dense
from align_tf.models.remat import rematerialize


@dataclasses.dataclass(frozen=True)
class BertSize:
    """BERT dimensions. Named sizes set the first three; HF configs may set the rest.

    Attributes:
      num_layers, hidden_dim, num_heads: encoder depth, width and attention heads.
      intermediate_size: feed-forward width; ``None``: BERT's ``4 * hidden_dim``.
      num_segments: rows of the segment (token type) table.
      layer_norm_epsilon: BERT's 1e-12.
    """

    num_layers: int
    hidden_dim: int
    num_heads: int
    intermediate_size: int | None = None
    num_segments: int = 2
    layer_norm_epsilon: float = 1e-12

    @property
    def intermediate_dim(self) -> int:
        return self.intermediate_size or 4 * self.hidden_dim

    @classmethod
    def from_dict(cls, fields) -> "BertSize":
        """From a mapping (dict or ``ConfigDict``) of field values; unknown keys are an error."""
        return dataclass_from_mapping(cls, fields, "BERT")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Google's BERT miniatures (Turc et al., 2019) plus base/large.
SIZES = {
    "nano": BertSize(1, 64, 2),
    "tiny": BertSize(2, 128, 2),
    "mini": BertSize(4, 256, 4),
    "small": BertSize(4, 512, 8),
    "medium": BertSize(8, 512, 8),
    "base": BertSize(12, 768, 12),
    "large": BertSize(24, 1024, 16),
}


def get_size(size) -> tuple:
    """``(name, BertSize)`` for a ``SIZES`` key, a ``BertSize`` or a mapping of its fields (name
    ``"custom"`` for the latter two)."""
    return named_size(size, SIZES, BertSize, "BERT")


def split_for_fusion(size, fusion_layers: int) -> tuple:
    """ALBEF's split of one BERT of L layers: ``(text part, fusion part)`` sizes.

    Layers ``0 … L-k-1`` are the text tower (``transformer_layer_i``); layers ``L-k … L-1`` become
    the fusion encoder (``align_tf.models.fusion``), whose layer ``j`` holds BERT layer ``L-k+j``'s
    self-attention and feed-forward weights plus a cross-attention block to the image tokens that
    BERT does not have (ALBEF initialises it randomly). ``k`` must leave at least one text layer.
    """
    _, size = get_size(size)
    k = int(fusion_layers)
    if not 0 < k < size.num_layers:
        raise ValueError(f"model.fusion_layers={k} must be in [1, {size.num_layers - 1}] for a "
                         f"{size.num_layers}-layer BERT (at least one layer stays the text tower)")
    return (dataclasses.replace(size, num_layers=size.num_layers - k),
            dataclasses.replace(size, num_layers=k))


def _init():
    return keras.initializers.TruncatedNormal(stddev=0.02)


def bert_text_encoder(size="tiny", vocabulary_size=30522, embed_dim=None, max_sequence_length=512,
                      dropout=0.1, num_segments=None, layer_norm_epsilon=None,
                      remat=False, name=None) -> keras.Model:
    """Builds the ALIGN text tower.

    Args:
      size: a key of ``SIZES`` (``nano``, ``tiny``, ``mini``, ``small``, ``medium``, ``base``,
        ``large``), a ``BertSize`` or a mapping of its fields.
      vocabulary_size: WordPiece vocabulary size.
      embed_dim: output size of the linear projection of [CLS]; ``None`` returns [CLS] unprojected.
      max_sequence_length: size of the learned position table (inputs may be shorter).
      dropout: dropout of embeddings, attention and feed-forward.
      num_segments: size of the segment (token type) table; ``None``: the size's (2).
      layer_norm_epsilon: ``None``: the size's (BERT's 1e-12).
      remat: rematerialise each transformer layer in the backward pass
        (``align_tf.models.remat``): same results, activation memory of one layer.
      name: model name.

    Returns:
      A ``keras.Model`` taking ``{"token_ids", "padding_mask", "segment_ids"}`` (int32,
      ``(batch, seq)``) and returning ``(batch, embed_dim)`` text features.
    """
    size_name, size = get_size(size)
    if num_segments is None:
        num_segments = size.num_segments
    if layer_norm_epsilon is None:
        layer_norm_epsilon = size.layer_norm_epsilon

    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input((None,), dtype="int32", name="padding_mask")
    segment_ids = keras.Input((None,), dtype="int32", name="segment_ids")

    tokens = keras.layers.Embedding(vocabulary_size, size.hidden_dim, embeddings_initializer=_init(),
                                    name="token_embedding")(token_ids)
    positions = keras_hub.layers.PositionEmbedding(max_sequence_length, initializer=_init(),
                                                   name="position_embedding")(tokens)
    segments = keras.layers.Embedding(num_segments, size.hidden_dim, embeddings_initializer=_init(),
                                      name="segment_embedding")(segment_ids)
    x = keras.layers.Add(name="embeddings_add")([tokens, positions, segments])
    x = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="embeddings_layer_norm")(x)
    x = keras.layers.Dropout(dropout, name="embeddings_dropout")(x)
    for i in range(size.num_layers):
        x = keras_hub.layers.TransformerEncoder(
            intermediate_dim=size.intermediate_dim, num_heads=size.num_heads, dropout=dropout,
            activation="gelu",  # exact erf GELU
            layer_norm_epsilon=layer_norm_epsilon, kernel_initializer=_init(),
            name=f"transformer_layer_{i}")(x, padding_mask=padding_mask)
    x = x[:, 0, :]  # [CLS]
    if embed_dim is not None:
        x = keras.layers.Dense(embed_dim, kernel_initializer=_init(), name="text_projection")(x)
    model = keras.Model({"token_ids": token_ids, "padding_mask": padding_mask,
                         "segment_ids": segment_ids}, x, name=name or f"bert_{size_name}")
    flatten_einsum_dense(model)  # attention projections as 2-D matmuls (flat_einsum's docstring)
    if remat:
        # One segment per transformer layer (a single Keras layer each).
        rematerialize(model, lambda layer: layer if layer.startswith("transformer_layer_") else None)
    return model
