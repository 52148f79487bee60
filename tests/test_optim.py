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
