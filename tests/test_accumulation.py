"""Exact gradient accumulation (train.accumulation_steps, align_tf/objectives/accumulation.py).

K sub-batches on one device must give the loss, gradients and BatchNorm moving statistics of the
same global batch on K replicas (BN statistics per replica = per sub-batch); with BN frozen, K must
not matter at all; dropout and stochastic depth must draw the same masks in both passes.

Weights are compared after one SGD step with learning rate 1: the change is minus the gradient.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from align_tf import objectives, trainer
from align_tf.configs import base
from align_tf.models import random_streams
from align_tf.models.dual_encoder import build_dual_encoder
from align_tf.objectives import accumulation

GLOBAL_BATCH, VOCAB, SEQ, IMAGE = 8, 50, 8, 32


def small_config(dropout=False, objective="contrastive"):
    """Nano towers; the image tower with two blocks in four stages, so that stochastic depth has
    residual blocks to drop."""
    c = base.get_config()
    c.model.image_architecture = dict(width=0.25, depth=0.5, drop_connect_rate=0.3 if dropout
                                      else 0.0)
    c.model.drop_connect_rate = 0.3 if dropout else 0.0
    c.model.text_size_name = "nano"
    c.model.text_dropout = 0.1 if dropout else 0.0
    c.model.bn_group_size = 0  # statistics per replica, i.e. per sub-batch
    c.model.max_sequence_length = SEQ
    c.objective.name = objective
    if objective == "sigmoid":
        c.model.similarity = "sigmoid"
    return c


def make_batch(seed=0, rows=GLOBAL_BATCH):
    rng = np.random.default_rng(seed)
    mask = (np.arange(SEQ)[None] < rng.integers(3, SEQ + 1, rows)[:, None]).astype(np.int32)
    return {"image": rng.uniform(size=(rows, IMAGE, IMAGE, 3)).astype(np.float32),
            "text": {"token_ids": (rng.integers(5, VOCAB, (rows, SEQ)) * mask).astype(np.int32),
                     "padding_mask": mask, "segment_ids": np.zeros((rows, SEQ), np.int32)}}


def build(config, init=None, strategy=None, accumulation_steps=1, freeze_bn=False):
    """``(model, objective)`` with SGD(1), optionally starting from weights ``init``."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = build_dual_encoder(config.model, VOCAB)
        if freeze_bn:
            for layer in model._flatten_layers():  # noqa: SLF001
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
        objective = objectives.build_objective(config.objective, model,
                                               keras.optimizers.SGD(learning_rate=1.0), seed=3)
    objective.accumulation_steps = accumulation_steps
    if init is not None:
        model.set_weights(init)
    return model, objective


def one_step(config, init, strategy=None, accumulation_steps=1, jit=False, freeze_bn=False,
             graph=False, rows=GLOBAL_BATCH):
    """``(loss, weights after one SGD step)``; the batch is split over the strategy's replicas.
    One device runs eagerly unless ``graph`` or ``jit`` (replicas always run a graph)."""
    strategy = strategy or tf.distribute.get_strategy()
    model, objective = build(config, init, strategy, accumulation_steps, freeze_bn)
    batch, n = make_batch(rows=rows), strategy.num_replicas_in_sync
    if n > 1:
        per_replica = rows // n
        data = strategy.experimental_distribute_values_from_function(lambda ctx: tf.nest.map_structure(
            lambda x: x[ctx.replica_id_in_sync_group * per_replica:][:per_replica], batch))
        step = tf.function(lambda d: strategy.reduce(
            "MEAN", strategy.run(objective.train_step, args=(d,))["loss"], axis=None))
    else:
        data = tf.nest.map_structure(tf.constant, batch)
        # One step: eager is cheaper than tracing a graph.
        step = tf.function(lambda d: objective.train_step(d)["loss"], jit_compile=jit) \
            if jit or graph else (lambda d: objective.train_step(d)["loss"])
    loss = float(step(data))
    return loss, [w.numpy() for w in model.weights]


def assert_same_step(a, b, init, tolerance=1e-5):
    """Same loss, and the same change of every weight to ``tolerance`` relative to the largest
    change in its tensor (float32 sums in another order differ by ~1e-7 of the largest term)."""
    (loss_a, weights_a), (loss_b, weights_b) = a, b
    np.testing.assert_allclose(loss_a, loss_b, rtol=tolerance)
    changed = 0
    for wa, wb, w0 in zip(weights_a, weights_b, init):
        # The change is -gradient (trainable) or the moving-statistics update (BatchNorm).
        scale = max(float(np.abs(wb - w0).max()), 1.0)
        np.testing.assert_allclose(wa - w0, wb - w0, atol=tolerance * scale, rtol=0)
        changed += not np.allclose(wa, w0)
    assert changed > len(init) // 3  # the step really moved the weights (BN frozen: ~40%)


def initial_weights(config):
    keras.utils.set_random_seed(0)
    model = build_dual_encoder(config.model, VOCAB)
    return [w.numpy() for w in model.weights]


@pytest.fixture(scope="module")
def contrastive_init():
    return initial_weights(small_config())


@pytest.mark.parametrize("k", [2, 4])
def test_sub_batches_equal_replicas(contrastive_init, k):
    """K sub-batches on one device = K replicas (MirroredStrategy) on the same global batch:
    loss, gradients and BatchNorm moving statistics (one update with the mean statistics)."""
    config = small_config()
    mirrored = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(k)],
                                              tf.distribute.ReductionToOneDevice())
    # Both graphs: eager kernels and the graph's (grappler-fused) ones round the stem
    # convolution's gradient differently, by ~5e-5 of its largest entry. Sub-batches of 4 rows:
    # BatchNorm over 2 rows normalises to ±1 and its gradient is rounding noise.
    rows = 4 * k
    assert_same_step(one_step(config, contrastive_init, accumulation_steps=k, graph=True,
                              rows=rows),
                     one_step(config, contrastive_init, strategy=mirrored, rows=rows),
                     contrastive_init)


@pytest.mark.slow  # another ~30 s of tracing; the contrastive cases above run by default
def test_sigmoid_sub_batches_equal_replicas():
    """The same for SigLIP's chunked cross-replica sigmoid loss (K = 2)."""
    config = small_config(objective="sigmoid")
    init = initial_weights(config)
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"],
                                              tf.distribute.ReductionToOneDevice())
    assert_same_step(one_step(config, init, accumulation_steps=2, graph=True),
                     one_step(config, init, strategy=mirrored), init)


@pytest.mark.slow  # XLA compiles the two passes for ~50 s of CPU
def test_jit_compile_gives_the_same_step(contrastive_init):
    """K = 2 compiled with XLA on one device = K = 2 without. XLA's CPU convolutions round
    differently: K = 1 differs by ~6e-6 of the largest change between XLA and TF, and BatchNorm
    over 4-row sub-batches amplifies that to ~3e-5 (stem and early convolution kernels)."""
    config = small_config()
    assert_same_step(one_step(config, contrastive_init, accumulation_steps=2, jit=True),
                     one_step(config, contrastive_init, accumulation_steps=2), contrastive_init,
                     tolerance=1e-4)


def test_frozen_batch_norm_makes_k_irrelevant(contrastive_init):
    """With BatchNorm frozen (inference statistics) every row is independent of the others in the
    towers: K = 1, 2, 4 give the same loss and gradients."""
    config = small_config()
    reference = one_step(config, contrastive_init, freeze_bn=True)
    for k in (2, 4):
        assert_same_step(one_step(config, contrastive_init, accumulation_steps=k, freeze_bn=True),
                         reference, contrastive_init)


@pytest.mark.parametrize("objective_name", ["contrastive", "momentum_distillation"])
def test_both_passes_use_the_same_masks(objective_name):
    """Dropout and stochastic depth on: the accumulated gradient equals the gradient of one tape
    over both sub-batches, each drawn with the masks of ``stateless_seeds(..., sub_batch=k)``.
    Momentum distillation: its momentum towers see the whole batch inside the loss."""
    config = small_config(dropout=True, objective=objective_name)
    config.objective.momentum_distillation.alpha_ramp_steps = 0  # targets from the first step
    keras.utils.set_random_seed(0)
    model, objective = build(config)
    batch = tf.nest.map_structure(tf.constant, make_batch())
    variables = model.trainable_variables
    step = objective.optimizer.iterations

    def reference(sub_batch_ids):
        with tf.GradientTape() as tape:
            parts = []
            for k, sub_batch in zip(sub_batch_ids, accumulation.split(batch, 2)):
                with random_streams.stateless_seeds(model, objective.seed, step, sub_batch=k):
                    parts.append(objective.embed(sub_batch))
            embeddings = tf.nest.map_structure(lambda *p: tf.concat(p, 0), *parts)
            loss = objective.loss_from_embeddings(batch, embeddings)["loss"]
        return loss, tape.gradient(loss, variables)

    _, loss, grads = accumulation.accumulated_gradients(objective, batch, 2, variables, 1.0)
    ref_loss, ref_grads = reference([0, 1])
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-6)
    dense = [tf.convert_to_tensor(g).numpy() for g in grads]
    for g, r in zip(dense, ref_grads):
        np.testing.assert_allclose(g, tf.convert_to_tensor(r).numpy(), atol=1e-5, rtol=1e-4)
    # The masks matter: other masks (the sub-batches' swapped) give another gradient.
    _, swapped = reference([1, 0])
    assert max(float(np.abs(g - tf.convert_to_tensor(s).numpy()).max())
               for g, s in zip(dense, swapped)) > 1e-3


def test_moving_statistics_are_one_update_with_the_mean(contrastive_init):
    """The moving statistics after a K = 2 step are m·old + (1−m)·mean of the two sub-batches'
    statistics (NumPy, on the stem BatchNorm whose input is the stem convolution's output)."""
    config = small_config()
    model, objective = build(config, contrastive_init, accumulation_steps=2)
    batch = make_batch()
    stem = model.image_encoder.get_layer("stem_bn")
    conv_out = keras.Model(model.image_encoder.input,
                           model.image_encoder.get_layer("stem_conv").output)
    old_mean, old_var = stem.moving_mean.numpy(), stem.moving_variance.numpy()
    x = np.stack([conv_out(batch["image"][k * 4:(k + 1) * 4]).numpy() for k in range(2)])
    objective.train_step(tf.nest.map_structure(tf.constant, batch))
    m = stem.momentum
    mean = x.mean(axis=(1, 2, 3)).mean(0)
    var = x.var(axis=(1, 2, 3)).mean(0)
    np.testing.assert_allclose(stem.moving_mean.numpy(), m * old_mean + (1 - m) * mean,
                               atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(stem.moving_variance.numpy(), m * old_var + (1 - m) * var,
                               atol=1e-5, rtol=1e-5)


def test_config_errors():
    """One line naming the field: K not dividing the per-replica batch, an objective that
    cannot accumulate, K < 1."""
    config = small_config()
    config.data.max_tokens = SEQ
    config.train.batch_size = 12
    config.train.accumulation_steps = 8
    with pytest.raises(trainer.ConfigError, match="accumulation_steps=8 must divide the "
                                                  "per-replica batch of 6"):
        trainer.validate_config(config, num_replicas=2)
    config.train.accumulation_steps = 0
    with pytest.raises(trainer.ConfigError, match="accumulation_steps=0 must be positive"):
        trainer.validate_config(config)
    config.train.accumulation_steps = 2
    trainer.validate_config(config, num_replicas=2)
    assert not objectives.supports_accumulation("albef")  # ITM and MLM see more than embeddings
    assert objectives.supports_accumulation("momentum_distillation")
