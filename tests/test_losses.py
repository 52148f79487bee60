"""The loss against a plain NumPy transcription of the paper's equations (§4.1)."""

import numpy as np
import pytest
import tensorflow as tf

from align_tf import losses


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def numpy_align_loss(x, y, sigma, eps):
    """L_i2t + L_t2i with smoothed one-hot targets, written the way the paper writes it."""
    n = len(x)
    targets = np.eye(n) * (1 - eps) + eps / n
    l_i2t = -np.mean(np.sum(targets * _log_softmax(x @ y.T / sigma), axis=1))
    l_t2i = -np.mean(np.sum(targets * _log_softmax(y @ x.T / sigma), axis=1))
    return l_i2t + l_t2i


def _unit(rng, n, d):
    v = rng.normal(size=(n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("sigma,eps", [(1.0, 0.1), (0.05, 0.1), (0.3, 0.0)])
def test_loss_matches_numpy_paper_equations(sigma, eps):
    rng = np.random.default_rng(0)
    x, y = _unit(rng, 12, 8), _unit(rng, 12, 8)
    out = losses.align_loss(tf.constant(x, tf.float32), tf.constant(y, tf.float32), sigma,
                            label_smoothing=eps)
    np.testing.assert_allclose(out["loss"].numpy(), numpy_align_loss(x, y, sigma, eps), rtol=1e-5)
    np.testing.assert_allclose(out["loss"].numpy(), (out["loss_i2t"] + out["loss_t2i"]).numpy(),
                               rtol=1e-6)


def test_local_loss_over_gathered_keys_equals_global_loss():
    """Each replica scoring its rows against all keys, averaged, is the single-device loss."""
    rng = np.random.default_rng(1)
    x, y = _unit(rng, 16, 8), _unit(rng, 16, 8)
    gx, gy = tf.constant(x, tf.float32), tf.constant(y, tf.float32)
    per_replica = [losses.align_loss(gx[r * 4:(r + 1) * 4], gy[r * 4:(r + 1) * 4], 0.1, gx, gy,
                                     label_offset=r * 4)["loss"].numpy() for r in range(4)]
    np.testing.assert_allclose(np.mean(per_replica), numpy_align_loss(x, y, 0.1, 0.1), rtol=1e-5)


def test_aligned_pairs_have_lower_loss_than_shuffled():
    rng = np.random.default_rng(2)
    x = _unit(rng, 8, 16)
    aligned = losses.align_loss(tf.constant(x, tf.float32), tf.constant(x, tf.float32), 0.1)["loss"]
    shuffled = losses.align_loss(tf.constant(x, tf.float32), tf.constant(x[::-1].copy(), tf.float32),
                                 0.1)["loss"]
    assert aligned < shuffled
