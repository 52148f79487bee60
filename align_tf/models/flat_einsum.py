"""Attention projections as one 2-D matmul each, forward and backward.

Keras' TensorFlow backend rewrites EinsumDense's ``"abc,cde->abde"`` (``MultiHeadAttention``'s
query, key and value projections) and ``"abcd,cde->abe"`` (its output projection) into
``tf.matmul`` of a 3-D activation with a 2-D kernel whenever the shapes are static, as they are in
a training step. That is a broadcasting ``BatchMatMulV2``, and its kernel gradient is one matmul
per batch row, summed afterwards. On a 2-core AMD EPYC (TF 2.21, Eigen kernels) it ran 3.6× slower than
the same product as one 2-D matmul, and BERT-mini's projections took 24% of the benchmark's
training step. ``tensordot`` flattens both operands to 2-D: the same numbers from one ``MatMul``.
"""

from __future__ import annotations

import keras

from align_tf import compat


def tensordot_axes(equation: str) -> int | None:
    """How many axes ``equation`` contracts if it is a plain tensordot, else ``None``.

    A tensordot contracts the activation's trailing axes with the kernel's leading axes, in the
    same order, and keeps the other axes in order (``"abc,cde->abde"`` → 1).
    """
    if "." in equation or "->" not in equation:
        return None
    operands, out = equation.replace(" ", "").split("->")
    if operands.count(",") != 1:
        return None
    x, kernel = operands.split(",")
    n = len([c for c in x if c in kernel and c not in out])
    if n == 0 or x[len(x) - n:] != kernel[:n] or out != x[:len(x) - n] + kernel[n:]:
        return None
    return n


class FlatEinsumDense(keras.layers.EinsumDense):
    """``keras.layers.EinsumDense`` computed with ``keras.ops.tensordot`` when the equation is a
    tensordot; other equations, LoRA and quantized layers take Keras' own path."""

    def call(self, inputs, training=None):
        axes = tensordot_axes(self.equation)
        if axes is None or getattr(self, "lora_enabled", False) or self.quantization_mode:
            return super().call(inputs, training=training)
        x = keras.ops.tensordot(inputs, self.kernel, axes=axes)
        if self.bias is not None:
            x = keras.ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x


def flatten_einsum_dense(model: keras.layers.Layer) -> int:
    """Makes every built ``EinsumDense`` inside ``model`` a ``FlatEinsumDense``, in place (same
    variables, same results); returns how many. Keras configs do not list attention sublayers, so
    a model rebuilt from its config gets Keras' plain layers back: slower, not different."""
    count = 0
    for layer in compat.flatten_layers(model, include_self=False):
        if type(layer) is keras.layers.EinsumDense:
            layer.__class__ = FlatEinsumDense
            count += 1
    return count
