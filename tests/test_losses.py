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


# ----------------------------------------------------------------------------- float32 logits

def _near_duplicates(rng, n, m, d):
    """Unit queries and keys whose first ``n`` keys are near-copies of the queries (cosines ~1,
    where the logits that matter sit) and the rest random (cosines ~0)."""
    q = _unit(rng, n, d)
    k = _unit(rng, m, d)
    k[:n] = q + 1e-3 * k[:n]
    return q.astype(np.float32), (k / np.linalg.norm(k, axis=1, keepdims=True)).astype(np.float32)


def test_bf16_pieces_are_bfloat16_exact_and_sum_to_the_input():
    """What makes the split device-proof: each piece survives rounding to bfloat16 (TPU's default
    matmul pass; TF32 keeps more bits still) unchanged, and the three pieces add back exactly."""
    rng = np.random.default_rng(3)
    x = tf.constant(np.concatenate([rng.normal(size=500), rng.normal(size=500) * 1e-6,
                                    [0.0, -1.0, 3.0e30]]), tf.float32)
    pieces = losses.bf16_pieces(x)
    for piece in pieces:
        np.testing.assert_array_equal(tf.cast(tf.cast(piece, tf.bfloat16), tf.float32), piece)
    np.testing.assert_array_equal(pieces[0] + pieces[1] + pieces[2], x)
    assert np.abs(pieces[1].numpy()).max() > 0 and np.abs(pieces[2].numpy()).max() > 0


@pytest.mark.parametrize("dim", [64, 640])
def test_precise_logits_match_float64(dim):
    """The bf16x6 path forced on CPU is float32-accurate against float64 NumPy (a single bf16 pass,
    TPU's default, is ~1000x worse on the same numbers); its gradient is the plain matmul's."""
    rng = np.random.default_rng(4)
    q, k = _near_duplicates(rng, 32, 256, dim)
    exact = q.astype(np.float64) @ k.astype(np.float64).T  # |q|·|k| = 1: absolute = relative
    precise = losses.logits_matmul(tf.constant(q), tf.constant(k), precise=True).numpy()
    # float32 accumulation over 640 terms: ≤ 2e-6 on AVX-512 Intel, 2.6e-6 under XLA on AVX2 AMD.
    float32_accurate = 4e-6
    assert np.abs(precise - exact).max() <= float32_accurate
    # Under XLA too (TPU compiles every step): no pass folds the split away.
    compiled = tf.function(lambda a, b: losses.logits_matmul(a, b, precise=True),
                           jit_compile=True)(q, k).numpy()
    assert np.abs(compiled - exact).max() <= float32_accurate
    one_pass = tf.matmul(*(tf.cast(tf.cast(t, tf.bfloat16), tf.float32) for t in (q, k)),
                         transpose_b=True).numpy()
    assert np.abs(one_pass - exact).max() > 1e-4

    qt, kt = tf.constant(q), tf.constant(k)
    upstream = tf.constant(rng.normal(size=exact.shape), tf.float32)
    grads = []
    for precise_flag in (True, False):
        with tf.GradientTape() as tape:
            tape.watch([qt, kt])
            out = losses.logits_matmul(qt, kt, precise=precise_flag)
        grads.append(tape.gradient(out, [qt, kt], output_gradients=upstream))
    for g_precise, g_plain in zip(*grads):
        np.testing.assert_array_equal(g_precise, g_plain)


def test_cpu_logits_stay_the_plain_matmul():
    """On CPU the default is the plain float32 matmul, bit for bit (CPU results are unchanged);
    forcing ``precise_logits`` reaches both losses' logits."""
    rng = np.random.default_rng(5)
    q, k = (tf.constant(a) for a in _near_duplicates(rng, 8, 8, 16))
    np.testing.assert_array_equal(losses.logits_matmul(q, k), tf.matmul(q, k, transpose_b=True))
    out = losses.align_loss(q, k, 0.05)
    np.testing.assert_array_equal(out["logits_i2t"], tf.matmul(q, k, transpose_b=True) / 0.05)
    precise = losses.align_loss(q, k, 0.05, precise_logits=True)
    np.testing.assert_allclose(precise["loss"], out["loss"], rtol=1e-5)
    mod = losses.momentum_distillation_loss(q, k, 0.05, q, k, q, k, 0.4, precise_logits=True)
    np.testing.assert_array_equal(mod["logits_i2t"], precise["logits_i2t"])
