"""EfficientNet image tower (Tan & Le, 2019) as ALIGN uses it (paper §4.1).

The tower is EfficientNet *without* the final 1x1 "top" convolution: the last MBConv stage is
globally average-pooled and its width is the embedding size (640 for B7, 80/160 for tiny sizes).

Layer names follow ``keras.applications.EfficientNet`` (``stem_conv``, ``block1a_dwconv``, ...), so
ImageNet weights from keras.applications load by name and the public ALIGN checkpoint converts
one-to-one. One deliberate difference: stride-2 convolutions zero-pad by a fixed ``(k//2 - 1, k//2)``
(like the PyTorch port of the public ALIGN checkpoint, and like Keras ``correct_pad`` at even sizes),
so 289 px maps to 144 -> 72 -> 36 -> 18 -> 9 regardless of parity. The convolutions pad themselves
(``PaddedConv2D``, ``PaddedDepthwiseConv2D``): at even sizes that pad is TF's "same".

Inputs are float pixels in ``[0, 1]``; the tower rescales them to ``[-1, 1]`` (ALIGN's x/127.5 - 1).

Besides the named sizes, an ``EfficientNetSize`` (or a mapping of its fields, as stored in a config's
``model.image_architecture``) may spell out any base network the way HuggingFace's
``AlignVisionConfig`` does (per-stage channels, kernels, strides, repeats, expansion, SE ratio,
rounding divisor); ``align_tf.convert.hf_align`` uses that to rebuild arbitrary checkpoints.
"""

from __future__ import annotations

import dataclasses
import math

import keras

from align_tf.models.activations import swish
from align_tf.models.remat import rematerialize
from align_tf.models.batch_norm import BatchNormalization
from align_tf.models.fields import dataclass_from_mapping, named_size

# Keras-applications base blocks (EfficientNet-B0).
BASE_BLOCKS = (
    dict(kernel_size=3, repeats=1, filters_in=32, filters_out=16, expand_ratio=1, strides=1),
    dict(kernel_size=3, repeats=2, filters_in=16, filters_out=24, expand_ratio=6, strides=2),
    dict(kernel_size=5, repeats=2, filters_in=24, filters_out=40, expand_ratio=6, strides=2),
    dict(kernel_size=3, repeats=3, filters_in=40, filters_out=80, expand_ratio=6, strides=2),
    dict(kernel_size=5, repeats=3, filters_in=80, filters_out=112, expand_ratio=6, strides=1),
    dict(kernel_size=5, repeats=4, filters_in=112, filters_out=192, expand_ratio=6, strides=2),
    dict(kernel_size=3, repeats=1, filters_in=192, filters_out=320, expand_ratio=6, strides=1),
)


@dataclasses.dataclass(frozen=True)
class EfficientNetSize:
    """Compound-scaling coefficients of an EfficientNet, and its base network.

    The first five fields are what named sizes differ in (tensorflow/tpu ``efficientnet_builder``'s
    table). The rest default to keras.applications' B0 base network (``BASE_BLOCKS``) and exist to
    mirror HuggingFace ``AlignVisionConfig``.

    Attributes:
      width: channel multiplier.
      depth: block-repeat multiplier.
      resolution: the size's nominal input resolution (informational).
      drop_connect_rate: stochastic depth: the rate at which the last block's residual branch is
        dropped (block ``i`` of ``n`` drops at ``drop_connect_rate * i / n``); 0.2 for every size
        in the reference.
      classifier_dropout: dropout before the ImageNet classification head (the reference's
        ``dropout_rate``, which grows with the size). ALIGN's tower has no head, so it only
        documents the reference (and is for whoever puts a head on the tower).
      depth_divisor: channel counts are rounded to multiples of this.
      se_ratio: squeeze-excitation width as a fraction of the block's *input* channels.
      kernel_sizes, in_channels, out_channels, strides, repeats, expand_ratios: one entry per stage
        of the base network, before width/depth scaling.
      residual_on_stage_entry: whether a stage's first block adds its input when shapes allow
        (stride 1, equal channels). keras.applications and the original TF EfficientNet do; the
        HuggingFace port never does. Only tiny widths (e.g. 0.25, where 32 and 16 channels both
        round to 8) ever have such a block.
      symmetric_pad_blocks: indices (0-based, over all blocks) of stride-2 blocks whose depthwise
        conv pads symmetrically (HF ``depthwise_padding``); empty for align-base.
    """

    width: float
    depth: float
    resolution: int = 224
    drop_connect_rate: float = 0.2
    classifier_dropout: float = 0.2
    depth_divisor: int = 8
    se_ratio: float = 0.25
    kernel_sizes: tuple = tuple(b["kernel_size"] for b in BASE_BLOCKS)
    in_channels: tuple = tuple(b["filters_in"] for b in BASE_BLOCKS)
    out_channels: tuple = tuple(b["filters_out"] for b in BASE_BLOCKS)
    strides: tuple = tuple(b["strides"] for b in BASE_BLOCKS)
    repeats: tuple = tuple(b["repeats"] for b in BASE_BLOCKS)
    expand_ratios: tuple = tuple(b["expand_ratio"] for b in BASE_BLOCKS)
    residual_on_stage_entry: bool = True
    symmetric_pad_blocks: tuple = ()

    def __post_init__(self):
        # Lists (from JSON configs) become tuples so sizes stay hashable and comparable.
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, list):
                object.__setattr__(self, field.name, tuple(value))
        stages = {len(getattr(self, f)) for f in ("kernel_sizes", "in_channels", "out_channels",
                                                   "strides", "repeats", "expand_ratios")}
        if len(stages) != 1:
            raise ValueError(f"EfficientNet stage lists differ in length: {self}")
        if not set(self.strides) <= {1, 2}:
            raise ValueError(f"EfficientNet strides must be 1 or 2, got {self.strides}")

    @classmethod
    def from_dict(cls, fields) -> "EfficientNetSize":
        """From a mapping (dict or ``ConfigDict``) of field values; unknown keys are an error."""
        return dataclass_from_mapping(cls, fields, "EfficientNet")

    def to_dict(self) -> dict:
        """JSON-friendly field values (lists for tuples); ``from_dict`` inverts it."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


SIZES = {
    # Tiny CPU sizes (not in the paper): for tests and the embedded default run.
    "nano": EfficientNetSize(0.25, 0.25, 64, drop_connect_rate=0.0, classifier_dropout=0.0),
    "tiny": EfficientNetSize(0.5, 0.34, 96, drop_connect_rate=0.0, classifier_dropout=0.0),
    # tensorflow/tpu efficientnet_builder: (width, depth, resolution, classifier dropout);
    # stochastic depth is 0.2 throughout.
    "b0": EfficientNetSize(1.0, 1.0, 224, classifier_dropout=0.2),
    "b1": EfficientNetSize(1.0, 1.1, 240, classifier_dropout=0.2),
    "b2": EfficientNetSize(1.1, 1.2, 260, classifier_dropout=0.3),
    "b3": EfficientNetSize(1.2, 1.4, 300, classifier_dropout=0.3),
    "b4": EfficientNetSize(1.4, 1.8, 380, classifier_dropout=0.4),
    "b5": EfficientNetSize(1.6, 2.2, 456, classifier_dropout=0.4),
    "b6": EfficientNetSize(1.8, 2.6, 528, classifier_dropout=0.5),
    "b7": EfficientNetSize(2.0, 3.1, 600, classifier_dropout=0.5),
    # Noisy Student / ALIGN's main image tower.
    "l2": EfficientNetSize(4.3, 5.3, 800, classifier_dropout=0.5),
}


# keras.applications' CONV_KERNEL_INITIALIZER: He-normal on fan-out. Glorot would leave activations
# so small that BatchNorm's moving variance (initialised to 1) stays far above the batch variance for
# hundreds of steps, and inference-mode features collapse to a constant.
def _conv_init():
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="truncated_normal")


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scales a channel count by ``width`` and rounds to a multiple of ``divisor`` (as Keras does)."""
    filters *= width
    new_filters = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new_filters < 0.9 * filters:  # never round down by more than 10%
        new_filters += divisor
    return int(new_filters)


def round_repeats(repeats: int, depth: float) -> int:
    """Scales the number of blocks of a stage by ``depth`` (rounding up)."""
    return int(math.ceil(depth * repeats))


def _stride2_pad(kernel_size: int, symmetric: bool) -> tuple:
    half = kernel_size // 2
    before = half if symmetric else half - 1
    return ((before, half), (before, half))


class _PadsItself:
    """A stride-2 convolution (no bias, no activation) that zero-pads its input by ``fixed_pad``
    itself, then convolves "valid".

    At even sizes TF's "same" padding *is* the fixed ``(k//2 - 1, k//2)`` pad, so the convolution
    then runs "same" on the unpadded input. A separate pad cost a copy forward and a slice
    backward (~7% of B0's training step) and slowed the depthwise convolutions after it (B0 at
    batch 1: 38 → 29 ms without it). The sizes are read when the layer is
    called, so a tower built for any size (``image_size=None``) still gets the fast path in a
    traced step. The ``*_pad`` layer in front of it stays, as an identity: checkpoints key the
    towers' variables by layer index.
    """

    def __init__(self, *args, fixed_pad, **kwargs):
        kwargs.pop("padding", None)
        super().__init__(*args, padding="valid", **kwargs)
        if self.use_bias or self.activation not in (None, keras.activations.linear):
            raise ValueError("a padding convolution has no bias and no activation")
        self.fixed_pad = tuple(tuple(int(p) for p in side) for side in fixed_pad)

    def call(self, inputs):
        (top, bottom), (left, right) = self.fixed_pad
        height, width = inputs.shape[1:3]
        if (top == left == bottom - 1 == right - 1 and height and width
                and height % 2 == 0 and width % 2 == 0):
            return self._convolve(inputs, "same")
        return self._convolve(
            keras.ops.pad(inputs, ((0, 0), (top, bottom), (left, right), (0, 0))), "valid")

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        (top, bottom), (left, right) = self.fixed_pad
        return super().compute_output_shape(
            (batch, height and height + top + bottom, width and width + left + right, channels))

    def get_config(self):
        return {**super().get_config(), "fixed_pad": self.fixed_pad}


@keras.saving.register_keras_serializable(package="align_tf")
class PaddedConv2D(_PadsItself, keras.layers.Conv2D):
    def _convolve(self, inputs, padding):
        return keras.ops.conv(inputs, self.kernel, strides=self.strides, padding=padding,
                              dilation_rate=self.dilation_rate, data_format=self.data_format)


@keras.saving.register_keras_serializable(package="align_tf")
class PaddedDepthwiseConv2D(_PadsItself, keras.layers.DepthwiseConv2D):
    def _convolve(self, inputs, padding):
        return keras.ops.depthwise_conv(inputs, self.kernel, strides=self.strides,
                                        padding=padding, dilation_rate=self.dilation_rate,
                                        data_format=self.data_format)


def _bn(name, group_size=0, momentum=0.99, fused=True):
    # fused: align_tf.models.batch_norm (TF's fused kernel where it can; statistics over groups of
    # replicas; moving statistics from every replica). Otherwise Keras' own layer, which knows
    # only per-replica (0) or all-replica (-1) statistics.
    kwargs = dict(axis=-1, epsilon=1e-3, momentum=momentum, name=name)
    if fused:
        return BatchNormalization(group_size=group_size, **kwargs)
    if group_size not in (0, -1):
        raise ValueError(f"bn_group_size={group_size} needs fused_batch_norm=True")
    return keras.layers.BatchNormalization(synchronized=group_size == -1, **kwargs)


def _swish(name, fused_grad=True):
    # fused_grad: swish with an XLA-fused gradient (align_tf.models.activations).
    return keras.layers.Activation(swish if fused_grad else "swish", name=name)


def _mbconv(x, *, filters_in, filters_out, kernel_size, strides, expand_ratio, residual, drop_rate,
            se_ratio, symmetric_pad, bn_group_size, bn_momentum, fused_bn, fused_swish, name):
    """Mobile inverted bottleneck with squeeze-excitation (keras.applications ``block``)."""
    inputs = x
    filters = filters_in * expand_ratio
    if expand_ratio != 1:
        x = keras.layers.Conv2D(filters, 1, padding="same", use_bias=False,
                                kernel_initializer=_conv_init(), name=name + "expand_conv")(x)
        x = _bn(name + "expand_bn", bn_group_size, bn_momentum, fused_bn)(x)
        x = _swish(name + "expand_activation", fused_swish)(x)
    if strides == 2:
        x = keras.layers.Identity(name=name + "dwconv_pad")(x)  # PaddedDepthwiseConv2D pads
        x = PaddedDepthwiseConv2D(kernel_size, strides=2,
                                  fixed_pad=_stride2_pad(kernel_size, symmetric_pad),
                                  use_bias=False, depthwise_initializer=_conv_init(),
                                  name=name + "dwconv")(x)
    else:
        x = keras.layers.DepthwiseConv2D(kernel_size, strides=strides, padding="same",
                                         use_bias=False, depthwise_initializer=_conv_init(),
                                         name=name + "dwconv")(x)
    x = _bn(name + "bn", bn_group_size, bn_momentum, fused_bn)(x)
    x = _swish(name + "activation", fused_swish)(x)

    filters_se = max(1, int(filters_in * se_ratio))
    se = keras.layers.GlobalAveragePooling2D(name=name + "se_squeeze")(x)
    se = keras.layers.Reshape((1, 1, filters), name=name + "se_reshape")(se)
    se = keras.layers.Conv2D(filters_se, 1, padding="same", activation="swish",
                             kernel_initializer=_conv_init(), name=name + "se_reduce")(se)
    se = keras.layers.Conv2D(filters, 1, padding="same", activation="sigmoid",
                             kernel_initializer=_conv_init(), name=name + "se_expand")(se)
    x = keras.layers.multiply([x, se], name=name + "se_excite")

    x = keras.layers.Conv2D(filters_out, 1, padding="same", use_bias=False,
                            kernel_initializer=_conv_init(), name=name + "project_conv")(x)
    x = _bn(name + "project_bn", bn_group_size, bn_momentum, fused_bn)(x)
    if residual:
        if drop_rate > 0:
            x = keras.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=name + "drop")(x)
        x = keras.layers.add([x, inputs], name=name + "add")
    return x


def block_specs(size: EfficientNetSize) -> list:
    """Expands the base stages into one spec per block (names ``block1a``, ``block1b``, ...)."""
    specs = []
    for stage in range(len(size.in_channels)):
        filters_in = round_filters(size.in_channels[stage], size.width, size.depth_divisor)
        filters_out = round_filters(size.out_channels[stage], size.width, size.depth_divisor)
        for j in range(round_repeats(size.repeats[stage], size.depth)):
            spec = dict(
                name=f"block{stage + 1}{chr(j + 97)}_",
                filters_in=filters_in if j == 0 else filters_out,
                filters_out=filters_out,
                kernel_size=size.kernel_sizes[stage],
                strides=size.strides[stage] if j == 0 else 1,
                expand_ratio=size.expand_ratios[stage],
            )
            spec["residual"] = (spec["strides"] == 1 and spec["filters_in"] == filters_out
                                and (j > 0 or size.residual_on_stage_entry))
            specs.append(spec)
    return specs


def get_size(size) -> tuple:
    """``(name, EfficientNetSize)`` for a ``SIZES`` key, an ``EfficientNetSize`` or a mapping of
    its fields (name ``"custom"`` for the latter two)."""
    return named_size(size, SIZES, EfficientNetSize, "EfficientNet")


def efficientnet(size="b0", image_size=None, drop_connect_rate=None, symmetric_pad_blocks=None,
                 bn_group_size=0, bn_momentum=0.99, fused_batch_norm=True,
                 fused_swish_grad=True, remat=False, name=None) -> keras.Model:
    """Builds the ALIGN image tower.

    Args:
      size: a key of ``SIZES`` (``nano``, ``tiny``, ``b0``..``b7``, ``l2``), an
        ``EfficientNetSize`` or a mapping of its fields.
      image_size: static square input size; ``None`` accepts any height/width.
      drop_connect_rate: stochastic-depth rate at the last block; defaults to the size's.
      symmetric_pad_blocks: indices (0-based, over all blocks) of stride-2 blocks whose depthwise
        conv pads symmetrically (the PyTorch port's ``depthwise_padding``); empty for align-base.
        ``None``: the size's ``symmetric_pad_blocks``.
      bn_group_size: replicas whose batches share BatchNorm statistics
        (``align_tf.models.batch_norm``): 0 each replica its own, -1 all (multi-replica training
        then matches one device on the global batch), k groups of k consecutive replicas.
      bn_momentum: BatchNorm moving-average momentum. 0.99 (Keras/ALIGN) needs ~1k steps before the
        inference-mode statistics are usable; short runs want a smaller value.
      fused_batch_norm, fused_swish_grad: training-speed replacements with the same weights and
        values: BatchNorm on TF's fused kernel (``align_tf.models.batch_norm``) and swish with an
        XLA-fused gradient (``align_tf.models.activations``). ``False``: Keras' own layers
        (``benchmarks/bench_train.py --before`` times the step without them; Keras' BatchNorm
        keeps replica 0's moving statistics and takes ``bn_group_size`` 0 or -1 only).
      remat: rematerialise each MBConv block in the backward pass (``align_tf.models.remat``):
        same results, activation memory of one block plus the block boundaries.
      name: model name, default ``efficientnet_{size}``.

    Returns:
      A ``keras.Model`` mapping ``(batch, H, W, 3)`` pixels in ``[0, 1]`` to ``(batch, D)`` pooled
      features, where ``D`` is the width of the last stage.
    """
    size_name, size = get_size(size)
    if drop_connect_rate is None:
        drop_connect_rate = size.drop_connect_rate
    if symmetric_pad_blocks is None:
        symmetric_pad_blocks = size.symmetric_pad_blocks

    inputs = keras.Input((image_size, image_size, 3), name="pixels")
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="rescaling")(inputs)
    x = keras.layers.Identity(name="stem_conv_pad")(x)  # PaddedConv2D pads
    x = PaddedConv2D(round_filters(32, size.width, size.depth_divisor), 3, strides=2,
                     fixed_pad=_stride2_pad(3, False), use_bias=False,
                     kernel_initializer=_conv_init(), name="stem_conv")(x)
    x = _bn("stem_bn", bn_group_size, bn_momentum, fused_batch_norm)(x)
    x = _swish("stem_activation", fused_swish_grad)(x)

    specs = block_specs(size)
    for i, spec in enumerate(specs):
        x = _mbconv(x, drop_rate=drop_connect_rate * i / len(specs), se_ratio=size.se_ratio,
                    symmetric_pad=i in symmetric_pad_blocks, bn_group_size=bn_group_size,
                    bn_momentum=bn_momentum, fused_bn=fused_batch_norm,
                    fused_swish=fused_swish_grad, **spec)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    model = keras.Model(inputs, x, name=name or f"efficientnet_{size_name}")
    if remat:
        # One segment per block: its layers are named "block3b_..." (see block_specs).
        rematerialize(model, lambda layer: layer.split("_")[0]
                                if layer.startswith("block") else None)
    return model
