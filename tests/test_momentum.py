"""Momentum distillation (ALBEF's ITC-MoD): soft-target loss, EMA towers, feature queue."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from align_tf import losses, objectives
from align_tf.configs import base
from align_tf.models.dual_encoder import build_dual_encoder
from align_tf.objectives import ContrastiveObjective, MomentumDistillation

VOCAB, SEQ, IMAGE = 50, 8, 32


def _config(alpha=0.4, momentum=0.995, queue=0, ramp=0, distill=True, bn_group_size=0):
    c = base.get_config()
    c.model.text_size_name = "nano"
    c.model.max_sequence_length = SEQ
    c.model.drop_connect_rate = 0.0
    c.model.bn_group_size = bn_group_size
    c.objective.name = "momentum_distillation" if distill else "contrastive"
    o = c.objective.momentum_distillation
    o.alpha, o.momentum, o.queue_size, o.alpha_ramp_steps = alpha, momentum, queue, ramp
    return c


def _objective(seed=0, optimizer=None, **kwargs):
    """A freshly built model with its objective (``objective.model``)."""
    keras.utils.set_random_seed(seed)
    config = _config(**kwargs)
    model = build_dual_encoder(config.model, VOCAB)
    return objectives.build_objective(config.objective, model,
                                      optimizer or keras.optimizers.SGD(learning_rate=0.5))


def _batch(size, seed=0):
    rng = np.random.default_rng(seed)
    mask = (np.arange(SEQ)[None] < rng.integers(3, SEQ + 1, size)[:, None]).astype(np.int32)
    return {"image": rng.uniform(size=(size, IMAGE, IMAGE, 3)).astype(np.float32),
            "text": {"token_ids": (rng.integers(5, VOCAB, (size, SEQ)) * mask).astype(np.int32),
                     "padding_mask": mask, "segment_ids": np.zeros((size, SEQ), np.int32)}}


def _unit(rng, *shape):
    x = rng.normal(size=shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _loss_inputs(n_local=3, replicas=2, queue=5, dim=6, seed=0):
    """Embeddings of replica 1 of ``replicas`` (label offset n_local) and the gathered batch."""
    rng = np.random.default_rng(seed)
    n = n_local * replicas
    g = {k: _unit(rng, n, dim) for k in ("image", "text", "image_m", "text_m")}
    local = {k: v[n_local:2 * n_local] for k, v in g.items()}
    queues = (_unit(rng, queue, dim), _unit(rng, queue, dim)) if queue else (None, None)
    return g, local, queues, n_local


def _reference_loss(queries, queries_m, keys_m, queue, temperature, alpha, eps, offset):
    """NumPy ITC-MoD for one direction: online queries against the momentum keys + queue."""
    keys = np.concatenate([keys_m, queue]) if queue is not None else keys_m
    logits = queries @ keys.T / temperature
    k = logits.shape[1]
    one_hot = np.eye(k)[offset + np.arange(len(queries))] * (1 - eps) + eps / k
    sim_m = queries_m @ keys.T / temperature
    soft = np.exp(sim_m - sim_m.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    targets = alpha * soft + (1 - alpha) * one_hot
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return -(targets * log_p).sum(1).mean()


@pytest.mark.parametrize("average", [False, True])
def test_soft_target_loss_matches_numpy_reference(average):
    """Online queries are scored against the momentum keys (here the gathered momentum batch, as
    momentum_distillation passes them) plus the queue; targets from the momentum similarities
    over the same keys; directions summed (ALIGN) or averaged (ALBEF)."""
    g, local, (iq, tq), offset = _loss_inputs()
    temperature, alpha, eps = 0.3, 0.4, 0.1
    out = losses.momentum_distillation_loss(
        local["image"], local["text"], temperature, local["image_m"], local["text_m"],
        g["image_m"], g["text_m"], alpha, offset, eps, iq, tq, average_directions=average)
    i2t = _reference_loss(local["image"], local["image_m"], g["text_m"], tq, temperature, alpha,
                          eps, offset)
    t2i = _reference_loss(local["text"], local["text_m"], g["image_m"], iq, temperature, alpha,
                          eps, offset)
    np.testing.assert_allclose(out["loss_i2t"].numpy(), i2t, rtol=1e-5)
    np.testing.assert_allclose(out["loss_t2i"].numpy(), t2i, rtol=1e-5)
    np.testing.assert_allclose(out["loss"].numpy(), (i2t + t2i) / (2 if average else 1),
                               rtol=1e-5)
    assert out["logits_i2t"].shape == (3, 6 + 5)


def test_targets_and_keys_carry_no_gradient():
    g, local, (iq, tq), offset = _loss_inputs()
    watched = [tf.constant(local["image_m"]), tf.constant(g["text_m"]), tf.constant(0.3),
               tf.constant(local["image"])]
    with tf.GradientTape() as tape:
        tape.watch(watched)
        out = losses.momentum_distillation_loss(
            watched[3], local["text"], watched[2], watched[0], local["text_m"], g["image_m"],
            watched[1], 0.4, offset, 0.1, iq, tq)
    grads = tape.gradient(out["loss"], watched)
    assert grads[0] is None and grads[1] is None  # momentum queries and keys are constants
    assert grads[2] is not None  # σ still learns through the online logits
    assert grads[3] is not None  # and the online queries


def test_alpha_zero_without_queue_is_align_loss_in_value_not_gradient():
    """With α = 0, no queue and keys equal to the online embeddings (momentum = online, as at
    initialisation), the value is ALIGN's loss; but the gradient reaches only the queries, where
    align_loss also trains the keys."""
    g, local, _, offset = _loss_inputs(queue=0)
    plain = losses.align_loss(local["image"], local["text"], 0.3, g["image"], g["text"], offset, 0.1)
    keys = [tf.constant(g["image"]), tf.constant(g["text"])]
    with tf.GradientTape() as tape:
        tape.watch(keys)
        mod = losses.momentum_distillation_loss(
            local["image"], local["text"], 0.3, local["image_m"], local["text_m"], keys[0],
            keys[1], 0.0, offset, 0.1)
    for key in ("loss", "loss_i2t", "loss_t2i", "logits_i2t", "labels"):
        np.testing.assert_array_equal(mod[key].numpy(), plain[key].numpy())
    assert tape.gradient(mod["loss"], keys) == [None, None]


def test_alpha_zero_objective_loss_equals_contrastive_loss_at_initialisation():
    """With α = 0 and no queue, while the momentum towers still equal the online ones (a fresh
    objective, inference mode), the objective's loss is exactly ALIGN's; after a step the keys
    are the momentum towers' and it differs."""
    mod = _objective(alpha=0.0, momentum=0.5)
    assert isinstance(mod, MomentumDistillation)
    plain = ContrastiveObjective(mod.model, mod.optimizer)
    batch = tf.nest.map_structure(tf.constant, _batch(8))
    # Inference mode: both embed the batch identically (no dropout/BN-statistics draws).
    a, b = mod.compute_loss(batch, training=False), plain.compute_loss(batch, training=False)
    for key in ("loss", "loss_i2t", "loss_t2i", "logits_i2t"):
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
    tf.function(mod.train_step)(batch)
    a, b = mod.compute_loss(batch, training=False), plain.compute_loss(batch, training=False)
    assert not np.allclose(a["loss"].numpy(), b["loss"].numpy())
    assert type(_objective(distill=False)) is ContrastiveObjective  # the config switch


def test_alpha_ramps_linearly():
    objective = _objective(alpha=0.4, ramp=100)
    for step, expected in ((0, 0.0), (25, 0.1), (100, 0.4), (1000, 0.4)):
        objective.optimizer.iterations.assign(step)
        np.testing.assert_allclose(float(objective.current_alpha()), expected, rtol=1e-6)


def _state(objective):
    s = objective.state
    return objective.momentum_variables + [s.image_queue, s.text_queue, s.queue_pointer]


def test_ema_update_matches_formula_and_skips_non_finite_steps():
    m = 0.9
    objective = _objective(momentum=m, queue=16)
    model, pairs = objective.model, objective.momentum_pairs
    # Trainable weights and BatchNorm statistics of both towers, starting as copies.
    assert len(pairs) == len(model.image_encoder.weights) + len(model.text_encoder.weights)
    for ema, online in pairs:
        np.testing.assert_array_equal(ema.numpy(), online.numpy())
    step = tf.function(objective.train_step)
    for seed in (1, 2):  # the 2nd step starts from momentum weights that differ from the online ones
        ema_before = [ema.numpy() for ema, _ in pairs]
        step(tf.nest.map_structure(tf.constant, _batch(8, seed)))
        for (ema, online), before in zip(pairs, ema_before):
            np.testing.assert_allclose(ema.numpy(), m * before + (1 - m) * online.numpy(),
                                       rtol=1e-5, atol=1e-7)
    assert not np.allclose(pairs[0][0].numpy(), pairs[0][1].numpy())

    state = [v.numpy() for v in _state(objective)]
    bad = _batch(8, 3)
    bad["image"][2, 0, 0, 0] = np.nan
    assert float(step(tf.nest.map_structure(tf.constant, bad))["skipped_steps"]) == 1.0
    for before, v in zip(state, _state(objective)):
        np.testing.assert_array_equal(v.numpy(), before)


def test_queue_fifo_order_across_two_replicas():
    """MirroredStrategy over 2 CPUs, global batch 4, queue 8: each step writes the global batch's
    momentum features (replica 0's rows, then replica 1's) at the pointer, overwriting the oldest,
    identically on both replicas; and the step equals one device's on the same global batch."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"],
                                              tf.distribute.ReductionToOneDevice())
    kwargs = dict(alpha=0.4, queue=8, momentum=0.9, bn_group_size=-1)
    with strategy.scope():
        objective = _objective(**kwargs)
    model = objective.model
    single = _objective(seed=1, **kwargs)
    single.model.set_weights(model.get_weights())
    single.sync_momentum_towers()

    @tf.function
    def step(batch):
        data = strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.nest.map_structure(
                lambda x: x[ctx.replica_id_in_sync_group * 2:][:2], batch))
        out = strategy.run(objective.train_step, args=(data,))
        return strategy.reduce("MEAN", out["loss"], axis=None)

    single_step = tf.function(single.train_step)
    written = []
    for i in range(3):
        batch = tf.nest.map_structure(tf.constant, _batch(4, seed=10 + i))
        written.append(tuple(x.numpy() for x in objective.embed_momentum(batch)))
        loss = float(step(batch))
        assert int(objective.state.queue_pointer.numpy()) == (4 * (i + 1)) % 8
        if i == 0:
            np.testing.assert_allclose(loss, float(single_step(batch)["loss"]), rtol=1e-5)
            for a, b in zip(model.weights, single.model.weights):
                np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=2e-5)
    # After 3 steps: slots 0-3 hold step 2 (overwrote step 0), slots 4-7 hold step 1.
    for queue, k in ((objective.state.image_queue, 0), (objective.state.text_queue, 1)):
        expected = np.concatenate([written[2][k], written[1][k]])
        copies = strategy.experimental_local_results(queue.value)
        assert len(copies) == 2
        for copy in copies:
            np.testing.assert_allclose(copy.numpy(), expected, atol=1e-5)


def test_queue_size_must_be_a_multiple_of_the_global_batch():
    objective = _objective(queue=12)
    with pytest.raises(ValueError, match="objective.momentum_distillation.queue_size=12 must be "
                                         "a multiple of the "
                                         "global batch size 8"):
        tf.function(objective.train_step)(tf.nest.map_structure(tf.constant, _batch(8)))


def test_train_step_compiles_with_xla():
    objective = _objective(queue=16)
    step = tf.function(objective.train_step, jit_compile=True)
    ema = objective.momentum_variables[0].numpy()
    for i in range(2):
        out = step(tf.nest.map_structure(tf.constant, _batch(8, seed=i)))
        assert np.isfinite(out["loss"].numpy())
    assert int(objective.state.queue_pointer.numpy()) == 0  # 2 × 8 rows through a 16-row queue
    assert not np.allclose(objective.momentum_variables[0].numpy(), ema)


def test_checkpoint_round_trip_restores_momentum_towers_and_queue(tmp_path):
    from align_tf import trainer
    objective = _objective(queue=16)
    step = tf.function(objective.train_step)
    for i in range(3):
        step(tf.nest.map_structure(tf.constant, _batch(8, seed=i)))
    path = trainer.checkpoint_for(objective).save(str(tmp_path / "ckpt"))

    fresh = _objective(seed=5, queue=16)
    assert int(fresh.state.queue_pointer.numpy()) == 0
    trainer.restore(fresh, path)
    assert int(fresh.state.queue_pointer.numpy()) == 8
    for a, b in zip(objective.model.weights + _state(objective),
                    fresh.model.weights + _state(fresh)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Resume is exact: the next step is the same on both.
    batch = tf.nest.map_structure(tf.constant, _batch(8, seed=9))
    assert float(step(batch)["loss"]) == float(tf.function(fresh.train_step)(batch)["loss"])
    for a, b in zip(_state(objective), _state(fresh)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_checkpoint_written_before_the_objectives_split_resumes(tmp_path):
    """Run directories from before the split kept the skip counters, momentum towers and queue as
    variables of the model (checkpoint keys ``model/skipped_steps``, ``model/momentum_weights/…``,
    ``model/image_queue``): ``trainer.restore`` still resumes them exactly."""
    from align_tf import trainer
    from align_tf.objectives.base import ObjectiveState
    objective = _objective(queue=16)
    step = tf.function(objective.train_step)
    for i in range(2):
        step(tf.nest.map_structure(tf.constant, _batch(8, seed=i)))
    objective.skipped_steps.assign(3)
    # The old layout, spelled out: everything under "model", as DualEncoder's attributes were.
    old_model = ObjectiveState()
    old_model.image_encoder = objective.model.image_encoder
    old_model.text_encoder = objective.model.text_encoder
    old_model.temperature = objective.model.temperature
    old_model.skipped_steps = objective.skipped_steps
    old_model.consecutive_skips = objective.consecutive_skips
    old_model.momentum_weights = objective.state.momentum_weights
    for name in ("image_queue", "text_queue", "queue_pointer"):
        setattr(old_model, name, getattr(objective.state, name))
    path = tf.train.Checkpoint(model=old_model, optimizer=objective.optimizer).save(
        str(tmp_path / "ckpt"))
    assert any(k.startswith("model/skipped_steps") for k, _ in tf.train.list_variables(path))

    fresh = _objective(seed=5, queue=16)
    trainer.restore(fresh, path)
    assert int(fresh.skipped_steps.numpy()) == 3
    assert int(fresh.optimizer.iterations.numpy()) == 2
    for a, b in zip(objective.model.weights + _state(objective),
                    fresh.model.weights + _state(fresh)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    # A model-only checkpoint (converted weights) is not a training state.
    model_only = tf.train.Checkpoint(model=objective.model).save(str(tmp_path / "weights"))
    with pytest.raises(trainer.ConfigError, match="holds model weights only"):
        trainer.restore(fresh, model_only)


def test_the_model_has_only_the_online_towers():
    """Momentum towers belong to the objective: the model (what evaluation and export use) has
    exactly the towers and σ, and its embeddings ignore the momentum weights."""
    objective = _objective()
    model = objective.model
    assert len(model.weights) == len(model.image_encoder.weights) + \
        len(model.text_encoder.weights) + 1
    objective.momentum_variables[0].assign(tf.zeros_like(objective.momentum_variables[0]))
    pixels = tf.constant(_batch(2)["image"])
    np.testing.assert_allclose(
        model.embed_image(pixels).numpy(),
        losses.l2_normalize(model.image_encoder(pixels, training=False)).numpy())
    momentum_image, _ = objective.embed_momentum({"image": pixels, "text": _batch(2)["text"]})
    assert not np.allclose(momentum_image.numpy(), model.embed_image(pixels).numpy())


def test_a_skipped_step_reaches_neither_the_online_nor_the_momentum_statistics():
    """A batch with one ``inf`` pixel, then a clean batch: the skipped step leaves the model
    (BatchNorm's moving statistics included), the momentum towers and the queue bit-equal, and
    the clean step's EMA averages finite online weights. Before, the forward pass wrote ``inf`` /
    ``nan`` into the moving statistics and the next applied step copied them into the towers."""
    m = 0.9
    objective = _objective(momentum=m, queue=16)
    watched = objective.model.weights + _state(objective)
    before = [v.numpy() for v in watched]
    bad = _batch(8, 3)
    bad["image"][2, 5, 5, 0] = np.inf
    out = objective.train_step(tf.nest.map_structure(tf.constant, bad))  # eager: no tracing
    assert float(out["skipped_steps"]) == 1.0
    for want, v in zip(before, watched):
        np.testing.assert_array_equal(v.numpy(), want)
    ema_before = [ema.numpy() for ema in objective.momentum_variables]
    out = objective.train_step(tf.nest.map_structure(tf.constant, _batch(8, 4)))
    assert float(out["skipped_steps"]) == 1.0 and np.isfinite(float(out["loss"]))
    for (ema, online), old in zip(objective.momentum_pairs, ema_before):
        assert np.isfinite(ema.numpy()).all(), ema.path
        np.testing.assert_allclose(ema.numpy(), m * old + (1 - m) * online.numpy(),
                                   rtol=1e-5, atol=1e-7)
