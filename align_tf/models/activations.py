"""Swish (SiLU) whose gradient is one fused XLA kernel on the TF backend.

TF's ``tf.nn.silu`` runs forward as one fused oneDNN op but differentiates as six element-wise ops
(sigmoid recomputed, then sub/mul/add/mul/mul), each a full pass over the activation; in the
EfficientNet training step those were the largest share of non-convolution time on CPU. Here the
forward pass is still ``tf.nn.silu`` and the gradient ``dy · s · (1 + x (1 - s))``, ``s = σ(x)``,
is the same formula compiled by XLA into one loop (a ``jit_compile`` function called from the
ordinary graph; the rest of the step is not compiled). Values are those of ``tf.nn.silu`` and its
gradient up to float rounding. Calls no gradient tape records (inference) use ``tf.nn.silu``
itself. Other backends use ``keras.activations.swish``.
"""

from __future__ import annotations

import functools

import keras

from align_tf import compat


@functools.cache
def _tf_swish():
    import tensorflow as tf

    @tf.function(jit_compile=True, autograph=False)
    def swish_grad(x, dy):
        s = tf.sigmoid(x)
        return tf.cast(dy, x.dtype) * s * (1 + x * (1 - s))

    @tf.custom_gradient
    def swish(x):
        return tf.nn.silu(x), lambda dy: swish_grad(x, dy)

    return swish


@keras.saving.register_keras_serializable(package="align_tf")
def swish(x):
    """``x · σ(x)``; on the TF backend with an XLA-fused gradient."""
    if keras.backend.backend() != "tensorflow":
        return keras.activations.swish(x)
    if not compat.tape_could_record():  # no public API tells whether a tape records
        # Nothing differentiates this call (inference, export signatures): tf.nn.silu without
        # the custom-gradient wrapper, which cost 1.11-1.19x in B0 inference at batch 1-64
        # (benchmarks/profile_inference.py, keras_swish). A later gradient of such a graph (e.g.
        # fine-tuning a loaded SavedModel tower) is tf.nn.silu's own: the same values.
        return keras.activations.swish(x)
    return _tf_swish()(x)
