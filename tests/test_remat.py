"""Rematerialisation (model.remat, align_tf/models/remat.py) changes no result: the same loss,
gradients and BatchNorm moving statistics after a step, with dropout and stochastic depth on
(the recomputation must draw the same masks and must not update the moving statistics again)."""

import numpy as np
import pytest
import tensorflow as tf

from align_tf.models import remat
from test_accumulation import assert_same_step, initial_weights, one_step, small_config


def _config(remat_on, **kwargs):
    config = small_config(**kwargs)
    config.model.remat = remat_on
    return config


@pytest.fixture(scope="module")
def init():
    return initial_weights(_config(False, dropout=True))


def test_remat_gives_the_same_step(init, monkeypatch):
    """Eager, one device, dropout 0.1 and stochastic depth 0.3: remat on = off, and the backward
    pass really recomputed every EfficientNet block and BERT layer (with the forward's masks)."""
    replays = []
    replay = remat.random_streams.replay
    monkeypatch.setattr(remat.random_streams, "replay",
                        lambda captured: replays.append(captured) or replay(captured))
    with_remat = one_step(_config(True, dropout=True), init)
    blocks = 10 + 1  # the test image tower's blocks, the nano BERT's one layer
    assert len(replays) == blocks and all(r is not None for r in replays)
    assert_same_step(with_remat, one_step(_config(False, dropout=True), init), init)


@pytest.mark.slow  # tracing remat x accumulation x 2 replicas: minutes of CPU
def test_remat_with_accumulation_on_replicas(init):
    """MirroredStrategy (2 replicas), BatchNorm over all replicas (its statistics all-reduced in
    the recomputation too), K = 2 sub-batches, dropout on: remat on = off."""
    config_on, config_off = _config(True, dropout=True), _config(False, dropout=True)
    for config in (config_on, config_off):
        config.model.bn_group_size = -1
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"],
                                              tf.distribute.ReductionToOneDevice())
    assert_same_step(one_step(config_on, init, strategy=mirrored, accumulation_steps=2),
                     one_step(config_off, init, strategy=mirrored, accumulation_steps=2), init)


@pytest.mark.slow  # two XLA compilations, ~1 min of CPU
def test_remat_under_jit(init):
    """XLA: remat on = off (both compiled)."""
    assert_same_step(one_step(_config(True, dropout=True), init, jit=True),
                     one_step(_config(False, dropout=True), init, jit=True), init)


def test_inference_is_unchanged(init):
    """Inference runs Keras' own graph walk: the same embeddings with and without remat."""
    from align_tf.models.dual_encoder import build_dual_encoder
    from test_accumulation import VOCAB, make_batch
    batch = make_batch()
    outputs = []
    for remat_on in (True, False):
        model = build_dual_encoder(_config(remat_on, dropout=True).model, VOCAB)
        model.set_weights(init)
        outputs.append(model(batch, training=False)["logits_per_image"].numpy())
    np.testing.assert_array_equal(*outputs)
