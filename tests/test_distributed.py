"""Global-batch negatives across replicas: MirroredStrategy over 2 and 4 logical CPUs must give the
same loss, gradient and weights after one optimizer step as one device on the same global batch.

The weight check uses SGD: its update is the gradient itself, so equal weights prove equal
gradients through the all_gather. (Adam/LAMB's first step is ~lr·sign(g), which turns float
summation-order noise in near-zero gradients into ±lr differences.)"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from align_tf import objectives, optim
from align_tf.configs import base
from align_tf.models.dual_encoder import build_dual_encoder

GLOBAL_BATCH, VOCAB, SEQ, IMAGE = 8, 50, 8, 32


def _config():
    c = base.get_config()
    c.model.text_size_name = "nano"
    c.model.text_dropout = 0.0
    c.model.drop_connect_rate = 0.0
    c.model.bn_group_size = -1  # batch statistics over the global batch, as on one device
    c.model.max_sequence_length = SEQ
    return c


def _batch():
    rng = np.random.default_rng(0)
    mask = (np.arange(SEQ)[None] < rng.integers(3, SEQ + 1, GLOBAL_BATCH)[:, None]).astype(np.int32)
    return {"image": rng.uniform(size=(GLOBAL_BATCH, IMAGE, IMAGE, 3)).astype(np.float32),
            "text": {"token_ids": (rng.integers(5, VOCAB, (GLOBAL_BATCH, SEQ)) * mask).astype(np.int32),
                     "padding_mask": mask, "segment_ids": np.zeros((GLOBAL_BATCH, SEQ), np.int32)}}


def _one_step(strategy, initial_weights):
    config, batch = _config(), _batch()
    with strategy.scope():
        model = build_dual_encoder(config.model, VOCAB)
        objective = objectives.build_objective(config.objective, model,
                                               keras.optimizers.SGD(learning_rate=0.5))
    model.set_weights(initial_weights)
    n = strategy.num_replicas_in_sync
    per_replica = GLOBAL_BATCH // n

    def shard(ctx):
        i = ctx.replica_id_in_sync_group
        return tf.nest.map_structure(lambda x: x[i * per_replica:(i + 1) * per_replica], batch)

    data = strategy.experimental_distribute_values_from_function(shard)

    @tf.function
    def step(data):
        out = strategy.run(objective.train_step, args=(data,))
        return {k: strategy.reduce("MEAN", out[k], axis=None) for k in ("loss", "grad_norm")}

    out = step(data)
    return float(out["loss"]), float(out["grad_norm"]), [w.numpy() for w in model.weights]


@pytest.fixture(scope="module")
def single_device():
    keras.utils.set_random_seed(0)
    init = build_dual_encoder(_config().model, VOCAB).get_weights()
    return init, _one_step(tf.distribute.OneDeviceStrategy("/cpu:0"), init)


@pytest.mark.parametrize("replicas", [2, 4])
def test_mirrored_step_equals_single_device(single_device, replicas):
    init, (loss1, gnorm1, weights1) = single_device
    devices = [f"/cpu:{i}" for i in range(replicas)]
    # ReductionToOneDevice: CPU collectives keep group keys per process, which clash when
    # strategies with different replica counts share one test process.
    strategy = tf.distribute.MirroredStrategy(devices, tf.distribute.ReductionToOneDevice())
    loss, gnorm, weights = _one_step(strategy, init)
    np.testing.assert_allclose(loss, loss1, rtol=1e-5)
    np.testing.assert_allclose(gnorm, gnorm1, rtol=1e-4)
    changed = 0
    for w, w1, w0 in zip(weights, weights1, init):
        np.testing.assert_allclose(w, w1, atol=2e-5, rtol=1e-4)
        changed += not np.allclose(w1, w0)
    assert changed > len(init) // 2  # the step really updated the weights


def test_train_step_compiles_with_xla():
    """The TPU proxy: the whole step (towers, loss, LAMB update) compiles with jit_compile=True."""
    config = _config()
    config.model.bn_group_size = 0
    keras.utils.set_random_seed(0)
    model = build_dual_encoder(config.model, VOCAB)
    objective = objectives.build_objective(config.objective, model,
                                           optim.build_optimizer(config.optim, total_steps=10))
    step = tf.function(objective.train_step, jit_compile=True)
    batch = tf.nest.map_structure(tf.constant, _batch())
    first = step(batch)
    assert np.isfinite(first["loss"].numpy())
    assert "all-reduce" not in step.experimental_get_compiler_ir(batch)(stage="hlo")
    before = model.temperature.numpy()
    step(batch)
    assert model.temperature.numpy() != before


@pytest.mark.parametrize("replicas", [1, 2])
def test_non_finite_step_is_skipped_and_counted(replicas):
    """A NaN batch leaves every weight and optimizer slot untouched and is counted."""
    config = _config()
    keras.utils.set_random_seed(0)
    devices = [f"/cpu:{i}" for i in range(replicas)]
    strategy = tf.distribute.MirroredStrategy(devices, tf.distribute.ReductionToOneDevice())
    with strategy.scope():
        model = build_dual_encoder(config.model, VOCAB)
        objective = objectives.build_objective(config.objective, model,
                                               optim.build_optimizer(config.optim, total_steps=10))
    batch = _batch()
    batch["image"][1, 3, 3, 0] = np.nan
    per_replica = GLOBAL_BATCH // replicas
    data = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.nest.map_structure(
            lambda x: x[ctx.replica_id_in_sync_group * per_replica:][:per_replica], batch))
    before = [v.numpy().copy() for v in model.trainable_variables + objective.optimizer.variables]

    @tf.function
    def step(data):
        out = strategy.run(objective.train_step, args=(data,))
        return strategy.reduce("MEAN", out["skipped_steps"], axis=None)

    assert float(step(data)) == 1.0 and float(step(data)) == 2.0
    after = [v.numpy() for v in model.trainable_variables + objective.optimizer.variables]
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert int(objective.consecutive_skips.numpy()) == 2


def _mirrored(replicas=2):
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)],
                                          tf.distribute.ReductionToOneDevice())


def _split(strategy, batch):
    """``batch`` (a global batch) as per-replica shares, in replica order."""
    per_replica = len(batch["image"]) // strategy.num_replicas_in_sync
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.nest.map_structure(
            lambda x: x[ctx.replica_id_in_sync_group * per_replica:][:per_replica], batch))


def test_loss_non_finite_on_one_replica_only_is_skipped_on_every_replica(monkeypatch):
    """Replica 1's loss alone is NaN while every gradient is finite (a stop-gradient term): the
    skip is decided on the all-reduced loss, so both replicas skip and no weight moves (deciding on
    the local loss, replica 0 would apply the update; through merge_call, replica 0's decision
    would be everyone's)."""
    config = _config()
    keras.utils.set_random_seed(0)
    strategy = _mirrored()
    with strategy.scope():
        model = build_dual_encoder(config.model, VOCAB)
        objective = objectives.build_objective(config.objective, model,
                                               keras.optimizers.SGD(learning_rate=0.5))
    compute_loss = objective.compute_loss

    def poisoned_loss(batch, training=True):
        out = compute_loss(batch, training)
        return dict(out, loss=out["loss"] + tf.stop_gradient(tf.reduce_sum(batch["poison"])))

    monkeypatch.setattr(objective, "compute_loss", poisoned_loss)
    batch = _batch()
    batch["poison"] = np.zeros(GLOBAL_BATCH, np.float32)
    batch["poison"][-1] = np.nan  # a row of replica 1
    before = [v.numpy().copy() for v in model.trainable_variables]

    @tf.function
    def step(data):
        return strategy.run(objective.train_step, args=(data,))

    out = {k: [float(v) for v in strategy.experimental_local_results(t)]
           for k, t in step(_split(strategy, batch)).items()}
    assert np.isfinite(out["loss"][0]) and np.isnan(out["loss"][1])
    assert np.isfinite(out["grad_norm"]).all() and out["grad_norm"][0] > 0
    assert out["skipped_steps"] == [1.0, 1.0] and out["consecutive_skips"] == [1.0, 1.0]
    for b, v in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(v.numpy(), b)


@pytest.mark.parametrize("name", ["contrastive", "momentum_distillation"])
def test_merge_call_path_equals_replica_context_path(name):
    """TPUStrategy updates through ``_apply_if_finite``'s cross-replica path (its extended's
    ``_use_merge_call()`` is True, as for MirroredStrategy on CPU without XLA): cond in
    cross-replica context → ``call_for_each_replica`` → the optimizer's merge_call → MoD's
    ``after_apply`` merge_call. Without a strategy the step stays in replica context (the path of
    GPU replicas under XLA). Over an applied, a skipped (NaN) and an applied step, MirroredStrategy
    on 2 CPUs ends where the replica-context path does: weights, skip counters, step, momentum
    towers, queue and its pointer. Not compiled with XLA; the TPU path itself is unchecked on a
    TPU."""
    config = _config()
    config.objective.name = name
    config.objective[name].queue_size = 3 * GLOBAL_BATCH
    nan_batch = _batch()
    nan_batch["image"][1, 3, 3, 0] = np.nan
    batches = [_batch(), nan_batch, tf.nest.map_structure(lambda x: x[::-1].copy(), _batch())]

    def run(strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = build_dual_encoder(config.model, VOCAB)
            objective = objectives.build_objective(config.objective, model,
                                                   keras.optimizers.SGD(learning_rate=0.5))
        no_merge_call = []

        def replica_step(batch):
            no_merge_call.append(tf.__internal__.distribute.strategy_supports_no_merge_call())
            return objective.train_step(batch)

        step = tf.function(lambda data: strategy.run(replica_step, args=(data,)))
        initial = [w.numpy().copy() for w in model.weights]
        for batch in batches:
            step(_split(strategy, batch))
        state = {"step": objective.optimizer.iterations, "skipped": objective.skipped_steps,
                 "consecutive": objective.consecutive_skips}
        if name == "momentum_distillation":
            state.update(queue_pointer=objective.state.queue_pointer,
                         image_queue=objective.state.image_queue,
                         text_queue=objective.state.text_queue)
            state.update({f"momentum{i}": v for i, v in enumerate(objective.momentum_variables)})
        state.update({f"weight{i}": v for i, v in enumerate(model.weights)})
        moved = max(np.abs(w.numpy() - w0).max() for w, w0 in zip(model.weights, initial))
        return set(no_merge_call), {k: v.numpy() for k, v in state.items()}, moved

    replica_path, expected, moved = run(tf.distribute.get_strategy())
    merge_path, got, _ = run(_mirrored())
    assert replica_path == {True} and merge_path == {False}
    assert (got["step"], got["skipped"], got["consecutive"]) == (2, 1, 0)
    assert sorted(got) == sorted(expected)
    # Two SGD steps through 2 replicas' all-reduces differ from one device by float noise only;
    # a missed, doubled or one-replica update would be 100x the tolerance.
    assert moved > 100 * 1e-4
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], atol=1e-4, rtol=1e-3, err_msg=key)
