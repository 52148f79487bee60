"""LAMB set-up and the learning-rate schedule of the paper's recipe (§5)."""

import keras
import numpy as np
import pytest

from align_tf import optim
from align_tf.configs import base, paper
from align_tf.models.dual_encoder import build_dual_encoder


def test_warmup_then_linear_decay_matches_paper_recipe():
    c = paper.get_config()
    s = optim.WarmupLinearDecay(c.optim.learning_rate, c.optim.warmup_steps, c.train.steps)
    lr = lambda step: float(s(step))  # noqa: E731
    assert lr(0) == 0.0
    assert lr(5_000) == pytest.approx(0.5e-3)
    assert lr(10_000) == pytest.approx(1e-3)
    assert lr(605_000) == pytest.approx(0.5e-3, rel=1e-4)
    assert lr(1_200_000) == 0.0 and lr(1_300_000) == 0.0


def test_weight_decay_skips_biases_norms_and_temperature():
    config = base.get_config()
    config.model.text_size_name = "nano"
    model = build_dual_encoder(config.model, 50)
    opt = optim.build_optimizer(config.optim, total_steps=100)
    assert isinstance(opt, keras.optimizers.Lamb) and opt.weight_decay == pytest.approx(1e-5)
    opt.build(model.trainable_variables)
    decayed = {v.path for v in model.trainable_variables if opt._use_weight_decay(v)}
    skipped = {v.path for v in model.trainable_variables} - decayed
    assert "align/temperature" in skipped or any(p.endswith("temperature") for p in skipped)
    assert all(p.endswith(("bias", "gamma", "beta", "temperature")) for p in skipped)
    assert any(p.endswith("stem_conv/kernel") for p in decayed)
    assert any(p.endswith("text_projection/kernel") for p in decayed)
    assert not any(p.endswith(("bias", "gamma", "beta")) for p in decayed)


def test_weight_decay_shrinks_only_decayed_weights():
    """With zero gradients, one step changes kernels by lr·wd·w and leaves excluded weights alone."""
    config = base.get_config()
    config.optim.weight_decay = 0.1
    config.optim.warmup_steps = 0
    config.optim.name = "adamw"
    w = keras.Variable(np.ones(3, np.float32), name="kernel")
    b = keras.Variable(np.ones(3, np.float32), name="bias")
    opt = optim.build_optimizer(config.optim, total_steps=10)
    opt.apply([np.zeros(3, np.float32)] * 2, [w, b])
    lr = config.optim.learning_rate
    np.testing.assert_allclose(w.numpy(), 1 - lr * 0.1, rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), 1.0)


def test_fused_adamw_matches_keras_adamw():
    """align_tf's AdamW (ResourceApplyAdam) takes the same steps as keras.optimizers.AdamW, with a
    schedule, weight decay and an excluded variable, eagerly and in a tf.function."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    init = [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)]
    schedule = optim.WarmupLinearDecay(1e-2, 2, 10)
    runs = []
    for cls in (keras.optimizers.AdamW, optim.AdamW):
        variables = [keras.Variable(init[0], name="kernel"), keras.Variable(init[1], name="bias")]
        opt = cls(learning_rate=schedule, weight_decay=0.1)
        opt.exclude_from_weight_decay(var_names=["bias"])
        grad_rng = np.random.default_rng(1)
        apply = tf.function(lambda grads: opt.apply(grads, variables))
        for step in range(5):
            grads = [grad_rng.normal(size=v.shape).astype(np.float32) for v in variables]
            apply(grads) if step % 2 else opt.apply(grads, variables)
        runs.append([v.numpy() for v in variables + opt.variables[1:]])
    assert len(runs[0]) == len(runs[1])
    for got, want in zip(runs[1], runs[0]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert not np.allclose(runs[1][0], init[0])


def test_temperature_recovers_from_below_its_floor():
    """σ below ``min_temperature`` (where a clip inside the loss used to leave it for good: no
    gradient, and Adam's momentum only pushed it further): the clamp after the update puts the
    parameter on the floor, where the loss's gradient reaches it, and the label-smoothed loss's
    gradient at a tiny σ pushes it up (the over-confident logits cost more than they gain)."""
    import tensorflow as tf

    from align_tf import objectives
    from test_accumulation import VOCAB, make_batch, small_config
    config = small_config()
    keras.utils.set_random_seed(0)
    model = build_dual_encoder(config.model, VOCAB)
    objective = objectives.build_objective(config.objective, model,
                                           keras.optimizers.SGD(learning_rate=1e-5))
    floor = config.model.min_temperature
    model.temperature.assign(floor / 2)
    batch = tf.nest.map_structure(tf.constant, make_batch())
    for _ in range(2):  # eager: cheaper than tracing for two steps
        objective.train_step(batch)
    assert float(model.temperature.numpy()) > floor * 1.01


@pytest.mark.parametrize("similarity", ["softmax", "sigmoid"])
def test_temperature_bounds_are_applied_to_the_parameter_after_each_update(similarity):
    """Any optimizer step that moves σ (or the sigmoid model's t′ = -log temperature) past a bound
    leaves it on the bound; inside the bounds the update is untouched."""
    config = base.get_config()
    config.model.text_size_name = "nano"
    config.model.similarity = similarity
    config.model.min_temperature, config.model.max_temperature = 0.05, 0.5
    model = build_dual_encoder(config.model, 50)
    param = model.temperature if similarity == "softmax" else model.log_logit_scale
    low, high = (0.05, 0.5) if similarity == "softmax" else (np.log(2.0), np.log(20.0))
    opt = keras.optimizers.SGD(learning_rate=1.0)
    for step, expected in ((-10.0, high), (10.0, low), (-0.01, low + 0.01)):
        opt.apply([np.float32(step)], [param])  # SGD: param -= step
        np.testing.assert_allclose(float(param.numpy()), expected, rtol=1e-6)


def test_temperature_bounds_are_checked_in_one_line():
    """Bounds that contradict each other or the initial value are a one-line ConfigError; the
    ALBEF preset starts at ALBEF's 0.07 within its [0.001, 0.5]."""
    from align_tf import trainer
    from align_tf.configs import albef_tiny
    config = albef_tiny.get_config()
    trainer.validate_config(config)
    assert (config.model.temperature_init, config.model.min_temperature,
            config.model.max_temperature) == (0.07, 0.001, 0.5)
    for field, value, message in (
            ("max_temperature", 0.0005, "model.max_temperature=0.0005 must be >= "
                                        "model.min_temperature=0.001"),
            ("temperature_init", 0.6, "model.temperature_init=0.6 must be within the bounds"),
            ("logit_scale_init", 1.0, "model.logit_scale_init=1.0 must be within "
                                      "[1/max_temperature, 1/min_temperature]=[2.0, 1000.0]")):
        bad = base.get_config()
        bad.model.max_temperature = 0.5
        bad.model[field] = value
        if field == "logit_scale_init":
            bad.model.similarity, bad.objective.name = "sigmoid", "sigmoid"
        with pytest.raises(trainer.ConfigError, match=message.replace("[", r"\[")) as e:
            trainer.validate_config(bad)
        assert "\n" not in str(e.value)
