"""An HF ``AlignConfig`` (as a dict) mapped onto align_tf's towers and config: every HF option our
EfficientNet and BERT do not implement is a ``ConversionError``, never an approximation.
"""

from __future__ import annotations

import numpy as np

from align_tf.convert import ConversionError
from align_tf.convert.hf_files import ALIGN_IMAGE_SIZE, ALIGN_MAX_TOKENS, ALIGN_RESIZE_SIZE


def hf_architectures(hf_config: dict) -> tuple:
    """``(EfficientNetSize, BertSize)`` reproducing an HF ``AlignConfig`` (as a dict).

    Raises ``ConversionError`` for HF options our towers do not implement (max pooling, other
    activations, non-RGB input, other BatchNorm eps, relative positions, ...).
    """
    from align_tf.models.efficientnet import EfficientNetSize, round_filters
    from align_tf.models.text_encoder import BertSize

    vision, text = hf_config.get("vision_config") or {}, hf_config.get("text_config") or {}

    def get(cfg, key, default):
        value = cfg.get(key)
        return default if value is None else value

    def require(ok, what):
        if not ok:
            raise ConversionError(f"HF AlignConfig has {what}; align_tf cannot reproduce it exactly")

    require(get(vision, "num_channels", 3) == 3, f"num_channels={vision.get('num_channels')}")
    require(get(vision, "hidden_act", "swish") in ("swish", "silu"),
            f"vision hidden_act={vision.get('hidden_act')!r}")
    require(get(vision, "pooling_type", "mean") == "mean",
            f"pooling_type={vision.get('pooling_type')!r}")
    require(abs(get(vision, "batch_norm_eps", 1e-3) - 1e-3) < 1e-12,
            f"batch_norm_eps={vision.get('batch_norm_eps')}")
    require(get(text, "hidden_act", "gelu") == "gelu",  # exact erf GELU, like our encoder
            f"text hidden_act={text.get('hidden_act')!r}")
    require(get(text, "position_embedding_type", "absolute") == "absolute",
            f"position_embedding_type={text.get('position_embedding_type')!r}")
    hidden, heads = get(text, "hidden_size", 768), get(text, "num_attention_heads", 12)
    require(hidden % heads == 0, f"hidden_size {hidden} not divisible by {heads} heads")

    image = EfficientNetSize(
        width=float(get(vision, "width_coefficient", 2.0)),
        depth=float(get(vision, "depth_coefficient", 3.1)),
        resolution=int(np.atleast_1d(get(vision, "image_size", 600))[0]),
        drop_connect_rate=float(get(vision, "drop_connect_rate", 0.2)),
        depth_divisor=int(get(vision, "depth_divisor", 8)),
        se_ratio=float(get(vision, "squeeze_expansion_ratio", 0.25)),
        kernel_sizes=tuple(get(vision, "kernel_sizes", (3, 3, 5, 3, 5, 5, 3))),
        in_channels=tuple(get(vision, "in_channels", (32, 16, 24, 40, 80, 112, 192))),
        out_channels=tuple(get(vision, "out_channels", (16, 24, 40, 80, 112, 192, 320))),
        strides=tuple(get(vision, "strides", (1, 2, 2, 2, 1, 2, 1))),
        repeats=tuple(get(vision, "num_block_repeats", (1, 2, 2, 3, 3, 4, 1))),
        expand_ratios=tuple(get(vision, "expand_ratios", (1, 6, 6, 6, 6, 6, 6))),
        residual_on_stage_entry=False,  # HF adds no shortcut around a stage's first block
        symmetric_pad_blocks=tuple(get(vision, "depthwise_padding", ())),
    )
    bert = BertSize(
        num_layers=int(get(text, "num_hidden_layers", 12)), hidden_dim=int(hidden),
        num_heads=int(heads), intermediate_size=int(get(text, "intermediate_size", 4 * hidden)),
        num_segments=int(get(text, "type_vocab_size", 2)),
        layer_norm_epsilon=float(get(text, "layer_norm_eps", 1e-12)))
    width = round_filters(image.out_channels[-1], image.width, image.depth_divisor)
    projection = get(hf_config, "projection_dim", 640)
    # ALIGN has no image projection: HF's logits only work when the pooled width equals it.
    require(width == projection, f"projection_dim={projection} but image features are {width}-d")
    return image, bert


def _named(arch, sizes, key):
    return next((name for name, size in sizes.items() if key(size) == key(arch)), "custom")


def make_config(hf_config: dict, vocabulary_size: int, image_size: int = ALIGN_IMAGE_SIZE,
                resize_size: int = ALIGN_RESIZE_SIZE, max_tokens: int = ALIGN_MAX_TOKENS):
    """The align_tf config (``configs/align_base.py`` recipe) of a converted ``AlignModel``.

    The towers are spelled out in ``model.image_architecture`` / ``model.text_architecture``
    (``build_dual_encoder`` prefers them); ``image_size_name``/``text_size_name`` name the
    equivalent named size (``b7``/``base`` for align-base) or ``"custom"``.
    """
    from align_tf.configs import align_base
    from align_tf.models import efficientnet, text_encoder

    image, bert = hf_architectures(hf_config)
    text = hf_config.get("text_config") or {}
    config = align_base.get_config()
    m = config.model

    def image_key(s):  # what the built network depends on
        stem = efficientnet.round_filters(32, s.width, s.depth_divisor)
        return efficientnet.block_specs(s), s.se_ratio, stem, tuple(s.symmetric_pad_blocks)

    m.image_size_name = _named(image, efficientnet.SIZES, image_key)
    m.text_size_name = _named(bert, text_encoder.SIZES, lambda s: (
        s.num_layers, s.hidden_dim, s.num_heads, s.intermediate_dim, s.num_segments,
        s.layer_norm_epsilon))
    m.image_architecture = image.to_dict()
    m.text_architecture = bert.to_dict()
    m.max_sequence_length = int(text.get("max_position_embeddings") or 512)
    m.text_dropout = float(text.get("hidden_dropout_prob") or 0.0)
    m.drop_connect_rate = image.drop_connect_rate
    m.temperature_init = float(hf_config.get("temperature_init_value") or 1.0)
    config.data.vocab_path = ""  # the vocabulary lives in the model_dir
    config.data.vocab_size = int(vocabulary_size)
    config.data.max_tokens = int(max_tokens)
    config.data.image_size = int(image_size)
    config.data.resize_size = int(resize_size)
    return config
