"""BatchNormalization on TF's fused kernel (``FusedBatchNormV3``) where the TF backend can use it.

Keras 3's ``BatchNormalization`` on the TF backend computes ``ops.moments`` and
``ops.batch_normalization`` as separate element-wise ops, forward and backward; TF's fused kernel
(oneDNN on CPU, cuDNN on GPU) does each direction in one op. On the EfficientNet-B0 training step
(49 BatchNorm layers) that is most of the step's non-convolution time.

``BatchNormalization`` here is a drop-in subclass: same constructor (plus ``group_size``), config,
weights and weight names (``gamma``, ``beta``, ``moving_mean``, ``moving_variance``), so
checkpoints, keras.applications weight copying and the HF conversion are unaffected, and on one
replica the same numerics:

* training (``training=True`` and the layer trainable): normalises with the batch statistics and
  updates ``moving = moving * momentum + batch * (1 - momentum)`` with the *biased* batch variance,
  as Keras does. (The fused kernel returns the Bessel-corrected variance; it is rescaled by
  ``(n - 1) / n``.)
* otherwise: normalises with the moving statistics.
* float16/bfloat16 inputs (mixed precision) go to the kernel as they are; it computes the
  statistics in float32 (its ``U`` type), which is what Keras' upcast to float32 is for.

Everything else runs Keras' own ``call``: other backends, statistics over several replicas
(``group_size``, or Keras' ``synchronized``), ``renorm``, masks, inputs that are not 4-D
channels-last, ``epsilon`` below cuDNN's minimum (1.001e-5) and dtypes the kernel lacks (float64).

Under a distribution strategy two things differ from Keras:

* ``group_size`` (``model.bn_group_size``): the batch statistics come from groups of replicas,
  as in the EfficientNet TPU reference's ``TpuBatchNormalization``: 0 each replica's own batch,
  -1 all replicas, k groups of k consecutive replicas (k must divide the replica count). Each
  replica's ``[sum, sum of squares, count]`` is summed within its group (``CrossReplicaSum`` with a
  ``group_assignment`` on TPU; elsewhere one all-reduce of a per-group slot), so gradients flow
  through the statistics to every replica of the group.
* the moving statistics average every replica's update. Keras' are ``aggregation="none"``: each
  replica would keep its own EMA and the checkpoint (and the exported model) would hold replica 0's,
  computed from 1/R of the data. After the update the layer all-reduces (MEAN) its moving
  statistics; every replica held the same values before, so this equals one EMA step with the
  replicas' mean batch statistics, and all replicas keep identical copies. Skipped when the
  statistics already cover all replicas, and a no-op with one replica.

Passes that re-run a forward (rematerialisation's recomputation, gradient accumulation's second
pass over a sub-batch) run inside ``frozen_moving_statistics()``: batch statistics as usual, no
update of the moving ones, which that step has updated already. ``moving_statistics(model)``
lists the variables, for gradient accumulation's one update per step.

The update happens in the forward pass, before the step knows whether its loss and gradients are
finite; ``Objective.train_step`` puts the statistics back on a skipped step (one select after the
all-reduce above, so every replica runs the same collectives).
"""

from __future__ import annotations

import contextlib
import threading

import keras
import tensorflow as tf

from align_tf import compat

_FUSED_DTYPES = ("float32", "float16", "bfloat16")


def check_group_size(group_size: int, num_replicas: int) -> int:
    """Replicas per statistics group for ``group_size`` (0 → 1, -1 → all); a one-line
    ``ValueError`` unless it is 0, -1 or a divisor of ``num_replicas``."""
    if group_size == 0:
        return 1
    if group_size == -1:
        return num_replicas
    if group_size < 1 or num_replicas % group_size:
        raise ValueError(f"bn_group_size={group_size} must be 0 (per replica), -1 (all replicas) "
                         f"or divide the {num_replicas} replicas")
    return group_size


_local = threading.local()  # .frozen: inside frozen_moving_statistics (per replica thread)


@contextlib.contextmanager
def frozen_moving_statistics():
    """Within the context, training-mode BatchNormalization layers of this module normalise with
    their batch statistics but leave the moving statistics (and their cross-replica average)
    alone. Per thread: MirroredStrategy runs each replica in its own."""
    previous = getattr(_local, "frozen", False)
    _local.frozen = True
    try:
        yield
    finally:
        _local.frozen = previous


def moving_statistics(model, updated_only: bool = False) -> list:
    """The moving statistics of every BatchNormalization layer in ``model`` (Keras' included),
    in a fixed order; ``updated_only``: only those a training-mode forward pass updates (of
    trainable layers; a frozen layer normalises with its moving statistics)."""
    return [v for layer in compat.flatten_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization)
            and (layer.trainable or not updated_only)
            for v in layer.non_trainable_weights]


def _replica_context():
    """``(replica context or None, replicas in sync)``; cross-replica context counts as one."""
    ctx = tf.distribute.get_replica_context()
    return ctx, ctx.num_replicas_in_sync if ctx is not None else 1


@keras.saving.register_keras_serializable(package="align_tf")
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` on ``tf.raw_ops.FusedBatchNormV3`` when it can, with
    statistics over groups of replicas and moving statistics from every replica.

    Args:
      group_size: replicas whose batches share statistics: 0 each its own, -1 all, k groups of k
        consecutive replicas (checked against the replica count when called in training).
      **kwargs: ``keras.layers.BatchNormalization``'s. Its ``synchronized=True`` (all replicas,
        by Keras' code) excludes ``group_size``.
    """

    def __init__(self, *args, group_size: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        if group_size < -1 or (group_size and self.synchronized):
            raise ValueError(f"BatchNormalization group_size={group_size} must be >= -1 and "
                             "cannot be combined with synchronized=True")
        self.group_size = int(group_size)

    def get_config(self):
        return {**super().get_config(), "group_size": self.group_size}

    def _use_fused(self, inputs, mask) -> bool:
        return (keras.backend.backend() == "tensorflow" and not self.synchronized
                and not self.group_size and not self.renorm and mask is None
                and len(inputs.shape) == 4
                and self.epsilon >= 1.001e-5  # cuDNN's minimum for the fused kernel
                and self.axis in (-1, 3) and keras.backend.standardize_dtype(inputs.dtype)
                in _FUSED_DTYPES)

    def call(self, inputs, training=None, mask=None):
        frozen = training and self.trainable and getattr(_local, "frozen", False)
        if self._use_fused(inputs, mask):
            outputs = self._fused_call(inputs, training, update=not frozen)
        elif frozen:
            # Keras' call updates the moving statistics itself: put the old values back.
            saved = [tf.identity(v.value) for v in self.non_trainable_weights]
            outputs = super().call(inputs, training=training, mask=mask)
            for v, value in zip(self.non_trainable_weights, saved):
                v.assign(value)
        else:
            outputs = super().call(inputs, training=training, mask=mask)
        if training and self.trainable and not frozen:
            self._average_moving_statistics()
        return outputs

    @compat.overrides(keras.layers.BatchNormalization)
    def _moments(self, inputs, mask):
        """Keras' batch statistics, or (``group_size`` set) those of this replica's group."""
        ctx, replicas = _replica_context()
        # One replica (evaluation, export's training-mode trace, fine-tuning on one device): the
        # group is this replica, whatever size the training config asked for.
        if not self.group_size or replicas == 1:
            return super()._moments(inputs, mask)
        if mask is not None:
            raise ValueError("BatchNormalization with group_size does not support masks")
        group = check_group_size(self.group_size, replicas)
        x = tf.cast(inputs, tf.float32)
        axes = compat.batch_norm_reduction_axes(self)
        total = tf.reduce_sum(x, axes)
        count = tf.cast(tf.size(x, tf.int64) // tf.size(total, tf.int64), tf.float32)
        stats = tf.stack([total, tf.reduce_sum(tf.square(x), axes),
                          tf.fill(tf.shape(total), count)])
        if replicas > 1:
            stats = _group_sum(stats, ctx, group, replicas)
        mean = stats[0] / stats[2]
        # Var = E[x²] - E[x]² (as Keras' synchronized and the TPU reference); rounding can dip < 0.
        variance = tf.maximum(stats[1] / stats[2] - tf.square(mean), 0.0)
        return tf.cast(mean, inputs.dtype), tf.cast(variance, inputs.dtype)

    def _average_moving_statistics(self):
        ctx, replicas = _replica_context()
        if replicas == 1 or self.synchronized or \
                check_group_size(self.group_size, replicas) == replicas:
            return  # the statistics (hence the updates) are the same on every replica already
        variables = self.non_trainable_weights  # moving mean/variance (+ renorm's), all (C,)
        mean = ctx.all_reduce(tf.distribute.ReduceOp.MEAN,
                              tf.stack([tf.convert_to_tensor(v) for v in variables]))
        for i, v in enumerate(variables):
            v.assign(tf.cast(mean[i], v.dtype))

    def _fused_call(self, inputs, training, update=True):
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
            if not update:
                return tf.cast(y, self.compute_dtype)
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


def _group_sum(stats, ctx, group: int, replicas: int):
    """``stats`` summed over this replica's group of ``group`` consecutive replicas
    (differentiable: each replica's gradient sums its whole group's)."""
    if group == replicas:
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, stats)
    groups = [list(range(g * group, (g + 1) * group)) for g in range(replicas // group)]
    if isinstance(tf.distribute.get_strategy(), tf.distribute.TPUStrategy):
        # As the TPU reference (untested here: no TPU): one collective within each group.
        return tf.compat.v1.tpu.cross_replica_sum(stats, groups)
    # One all-reduce over all replicas of a slot per group, each replica filling its group's slot:
    # the collectives of Mirrored/MultiWorker strategies have no group assignment.
    slot = tf.cast(ctx.replica_id_in_sync_group, tf.int32) // group
    slots = tf.one_hot(slot, len(groups), dtype=stats.dtype)[:, None, None] * stats[None]
    return tf.gather(ctx.all_reduce(tf.distribute.ReduceOp.SUM, slots), slot)
