"""BatchNormalization on TF's fused kernel (``FusedBatchNormV3``) where the TF backend can use it.

Keras 3's ``BatchNormalization`` on the TF backend computes ``ops.moments`` and
``ops.batch_normalization`` as separate element-wise ops, forward and backward; TF's fused kernel
(oneDNN on CPU, cuDNN on GPU) does each direction in one op. On the EfficientNet-B0 training step
(49 BatchNorm layers) that is most of the step's non-convolution time.

``BatchNormalization`` here is a drop-in subclass: same constructor, config, weights and weight
names (``gamma``, ``beta``, ``moving_mean``, ``moving_variance``), so checkpoints,
keras.applications weight copying and the HF conversion are unaffected, and the same numerics:

* training (``training=True`` and the layer trainable): normalises with the batch statistics and
  updates ``moving = moving * momentum + batch * (1 - momentum)`` with the *biased* batch variance,
  as Keras does. (The fused kernel returns the Bessel-corrected variance; it is rescaled by
  ``(n - 1) / n``.)
* otherwise: normalises with the moving statistics.
* float16/bfloat16 inputs (mixed precision) go to the kernel as they are; it computes the
  statistics in float32 (its ``U`` type), which is what Keras' upcast to float32 is for.

Everything else runs Keras' own ``call``: other backends, ``synchronized=True`` (statistics over all
replicas), ``renorm``, masks, inputs that are not 4-D channels-last, ``epsilon`` below cuDNN's
minimum (1.001e-5) and dtypes the kernel lacks (float64).
"""

from __future__ import annotations

import keras

_FUSED_DTYPES = ("float32", "float16", "bfloat16")


@keras.saving.register_keras_serializable(package="align_tf")
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` that uses ``tf.raw_ops.FusedBatchNormV3`` when it can."""

    def _use_fused(self, inputs, mask) -> bool:
        return (keras.backend.backend() == "tensorflow" and not self.synchronized
                and not self.renorm and mask is None and len(inputs.shape) == 4
                and self.epsilon >= 1.001e-5  # cuDNN's minimum for the fused kernel
                and self.axis in (-1, 3) and keras.backend.standardize_dtype(inputs.dtype)
                in _FUSED_DTYPES)

    def call(self, inputs, training=None, mask=None):
        if not self._use_fused(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        gamma = (tf.cast(self.gamma, tf.float32) if self.scale
                 else tf.ones((channels,), tf.float32))
        beta = (tf.cast(self.beta, tf.float32) if self.center
                else tf.zeros((channels,), tf.float32))
        x = tf.convert_to_tensor(inputs)
        if training and self.trainable:
            y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=tf.zeros((0,), tf.float32),
                variance=tf.zeros((0,), tf.float32), epsilon=self.epsilon,
                exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
            # The kernel's batch variance is Bessel-corrected (n / (n - 1)); Keras' moving
            # variance follows the biased one it normalises with.
            n = tf.cast(tf.size(x, out_type=tf.int64) // channels, tf.float32)
            variance = variance * ((n - 1.0) / tf.maximum(n, 1.0))
            moving_mean = tf.cast(self.moving_mean, tf.float32)
            moving_variance = tf.cast(self.moving_variance, tf.float32)
            self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
                exponential_avg_factor=1.0, data_format="NHWC", is_training=False)[0]
        return tf.cast(y, self.compute_dtype)
