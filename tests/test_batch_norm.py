"""BatchNormalization across replicas (``align_tf.models.batch_norm``): batch statistics per
replica, per group of replicas or over all of them (``model.bn_group_size``), with gradients through
the shared statistics; moving statistics averaged over every replica, and left alone by a skipped
(non-finite) train step on every path; the config field's migration.

MirroredStrategy over 4 logical CPUs (tests/conftest.py), with ReductionToOneDevice: CPU
collectives keep group keys per process, which clash between strategies in one test process."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from align_tf import run_dir
from align_tf.configs import base
from align_tf.models import batch_norm, efficientnet
from align_tf.models.batch_norm import BatchNormalization, check_group_size

REPLICAS, CHANNELS, MOMENTUM, EPSILON = 4, 3, 0.9, 1e-3
GLOBAL_ROWS = 8  # test_accumulation.make_batch's


def _strategy(replicas=REPLICAS):
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)],
                                          tf.distribute.ReductionToOneDevice())


def _replica_values(strategy, fn):
    """``fn()`` run on every replica: one list of per-replica NumPy values per output."""
    out = tf.function(lambda: strategy.run(fn))()
    return [[t.numpy() for t in strategy.experimental_local_results(o)] for o in out]


@pytest.mark.parametrize("group_size,shape", [
    (0, (3, 2, 2, CHANNELS)),  # each replica's statistics, TF's fused kernel
    (0, (5, CHANNELS)),        # each replica's statistics, Keras' path (not 4-D)
    (2, (3, 2, 2, CHANNELS)),  # groups of 2 of the 4 replicas
    (-1, (3, 2, 2, CHANNELS)),  # all replicas: one device on the global batch
])
def test_statistics_gradients_and_moving_averages_over_replicas(group_size, shape):
    """Per replica, the output and input gradient equal Keras' BatchNormalization on one device
    over the concatenated batch of the replica's group (gradients flow through the group's
    statistics); every replica's moving statistics equal the mean over replicas of the per-replica
    EMA updates with the group statistics (NumPy)."""
    rng = np.random.default_rng(0)
    scale = (1.0 + np.arange(REPLICAS)).reshape((REPLICAS,) + (1,) * len(shape))
    xs = (rng.normal(1.0, 2.0, (REPLICAS, *shape)) * scale).astype(np.float32)  # replicas differ
    ws = rng.normal(size=xs.shape).astype(np.float32)
    weights = [rng.normal(1.0, 0.2, CHANNELS), rng.normal(0.0, 0.2, CHANNELS),
               rng.normal(0.0, 1.0, CHANNELS), rng.uniform(0.5, 2.0, CHANNELS)]
    weights = [w.astype(np.float32) for w in weights]
    strategy = _strategy()
    with strategy.scope():
        layer = BatchNormalization(momentum=MOMENTUM, epsilon=EPSILON, group_size=group_size)
        layer.build((None, *shape[1:]))
    layer.set_weights(weights)
    assert layer._use_fused(tf.zeros(shape), None) == (group_size == 0 and len(shape) == 4)

    def train():
        i = tf.distribute.get_replica_context().replica_id_in_sync_group
        x = tf.gather(xs, i)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.gather(ws, i))
        return y, tape.gradient(loss, x)

    ys, grads = _replica_values(strategy, train)
    moving = _replica_values(strategy, lambda: (tf.identity(layer.moving_mean.value),
                                                tf.identity(layer.moving_variance.value)))

    group = check_group_size(group_size, REPLICAS)
    axes = tuple(range(len(shape) - 1))
    updates = []
    for first in range(0, REPLICAS, group):
        members = range(first, first + group)
        xg = tf.constant(np.concatenate([xs[r] for r in members]))
        ref = keras.layers.BatchNormalization(momentum=MOMENTUM, epsilon=EPSILON)
        ref.build((None, *shape[1:]))
        ref.set_weights(weights)
        with tf.GradientTape() as tape:
            tape.watch(xg)
            y = ref(xg, training=True)
            loss = tf.reduce_sum(y * np.concatenate([ws[r] for r in members]))
        ref_y, ref_grad = (np.split(t.numpy(), group) for t in (y, tape.gradient(loss, xg)))
        for j, r in enumerate(members):
            np.testing.assert_allclose(ys[r], ref_y[j], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(grads[r], ref_grad[j], rtol=1e-4,
                                       atol=1e-5 * np.abs(ref_grad[j]).max())
            # The EMA update replica r makes with its group's statistics.
            stats = xg.numpy().mean(axes), xg.numpy().var(axes)
            updates.append([MOMENTUM * old + (1 - MOMENTUM) * s
                            for old, s in zip(weights[2:], stats)])
    expected = np.mean(updates, axis=0)
    for copies, want in zip(moving, expected):
        for copy in copies:  # identical on every replica, so the checkpoint holds the average
            np.testing.assert_allclose(copy, want, rtol=1e-5, atol=1e-6)


def test_group_size_is_checked_and_serialised():
    assert [check_group_size(g, 8) for g in (0, 1, 2, 8, -1)] == [1, 1, 2, 8, 8]
    for bad in (3, 16, -2):
        with pytest.raises(ValueError, match=f"bn_group_size={bad} must be 0 .per replica., -1 "
                                             r".all replicas. or divide the 8 replicas"):
            check_group_size(bad, 8)
    with pytest.raises(ValueError, match="group_size=-2 must be >= -1"):
        BatchNormalization(group_size=-2)
    layer = BatchNormalization(group_size=2)
    assert BatchNormalization.from_config(layer.get_config()).group_size == 2

    # Traced on 4 replicas, groups of 3 are the same one-line error.
    strategy = _strategy()
    with strategy.scope():
        layer = BatchNormalization(group_size=3)
        layer.build((None, CHANNELS))
    with pytest.raises(ValueError, match="bn_group_size=3 must be .* divide the 4 replicas"):
        _replica_values(strategy, lambda: (layer(tf.ones((2, CHANNELS)), training=True),))


def test_efficientnet_passes_the_group_size_to_every_batch_norm():
    model = efficientnet.efficientnet("nano", bn_group_size=2)
    layers = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert layers and all(l.group_size == 2 for l in layers)
    # Keras' own layer (fused_batch_norm=False, for timing the old step) knows 0 and -1 only.
    keras_bn = efficientnet.efficientnet("nano", bn_group_size=-1, fused_batch_norm=False)
    assert all(l.synchronized for l in keras_bn.layers
               if isinstance(l, keras.layers.BatchNormalization))
    with pytest.raises(ValueError, match="bn_group_size=2 needs fused_batch_norm=True"):
        efficientnet.efficientnet("nano", bn_group_size=2, fused_batch_norm=False)


@pytest.mark.parametrize("old,new", [(True, -1), (False, 0)])
def test_legacy_sync_batch_norm(tmp_path, old, new):
    """config.json files with the old boolean load as the group size; the old flag is a one-line
    error naming the new one."""
    legacy = base.get_config().to_dict()
    del legacy["model"]["bn_group_size"]
    legacy["model"]["sync_batch_norm"] = old
    (tmp_path / "config.json").write_text(json.dumps(legacy))
    config = run_dir.load_config(str(tmp_path))
    assert config.model.bn_group_size == new and "sync_batch_norm" not in config.model

    from align_tf import train
    with pytest.raises(SystemExit, match="--config.model.sync_batch_norm moved: use "
                                         "--config.model.bn_group_size=-1"):
        train._rewrite_config_arg([f"--config.model.sync_batch_norm={old}"])


# A pairwise cover of (replicas, accumulation, remat): each pair of values is run once, so every
# path that updates the moving statistics in the forward pass is exercised in 4 cases, not 8.
# Eager but for one replica case traced as training runs it (tracing on 2 replicas costs ~6 s).
@pytest.mark.parametrize("replicas,accumulation_steps,remat_on,graph", [
    (1, 1, False, False), (1, 2, True, False), (2, 1, True, True), (2, 2, False, False)])
def test_a_skipped_step_leaves_the_moving_statistics_bit_equal(replicas, accumulation_steps,
                                                               remat_on, graph):
    """One ``inf`` pixel (in replica 0's rows) makes the step non-finite: it is skipped, and every
    BatchNorm's moving statistics stay bit-equal on every replica. Before the fix the forward
    pass had already written ``inf``/``nan`` there (and the all-reduce spread it to replica 1)."""
    from test_accumulation import build, make_batch, small_config
    config = small_config()
    # Two blocks: tracing (twice with 2 replicas, again for each pass) is most of the test's time.
    config.model.image_architecture = dict(
        width=0.25, depth=1.0, drop_connect_rate=0.0, kernel_sizes=[3, 3], in_channels=[32, 16],
        out_channels=[16, 24], strides=[1, 2], repeats=[1, 1], expand_ratios=[1, 6])
    config.model.remat = remat_on
    strategy = _strategy(replicas) if replicas > 1 else tf.distribute.get_strategy()
    keras.utils.set_random_seed(0)
    model, objective = build(config, strategy=strategy, accumulation_steps=accumulation_steps)
    batch = make_batch()
    batch["image"] = batch["image"][:, :16, :16].copy()  # tiny images: the step is what matters
    batch["image"][0, 3, 3, 0] = np.inf
    batch = tf.nest.map_structure(tf.constant, batch)

    def copies():
        return [[c.numpy() for c in strategy.experimental_local_results(v.value)]
                for v in batch_norm.moving_statistics(model) + model.trainable_variables]

    before = copies()
    if replicas > 1:
        rows = GLOBAL_ROWS // replicas
        data = strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.nest.map_structure(
                lambda x: x[ctx.replica_id_in_sync_group * rows:][:rows], batch))
        run = lambda d: strategy.run(objective.train_step, args=(d,))  # noqa: E731
        out = (tf.function(run) if graph else run)(data)
        skipped = strategy.experimental_local_results(out["skipped_steps"])[0]
    else:
        skipped = objective.train_step(batch)["skipped_steps"]
    assert float(skipped) == 1.0
    for want, got in zip(before, copies()):
        assert len(got) == replicas
        for copy in got:
            np.testing.assert_array_equal(copy, want[0])
