"""Stateless random streams (``align_tf.models.random_streams``): dropout masks and stochastic-depth
decisions differ across replicas (in one process and across worker processes) and across steps,
repeat on a rerun and on re-entry, and a run resumed from a checkpoint draws at step k what the
uninterrupted run drew.

MirroredStrategy over 2 and 4 logical CPUs (tests/conftest.py), with ReductionToOneDevice: CPU
collectives keep group keys per process, which clash between strategies in one test process."""

import json
import os
import subprocess
import sys

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from align_tf import objectives
from align_tf.configs import base
from align_tf.models.dual_encoder import build_dual_encoder
from align_tf.models.random_streams import seed_generators, stateless_seeds

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INPUTS = [np.ones((64, 1, 1, 1), np.float32), np.ones((2, 4, 8), np.float32)]


def _strategy(replicas):
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)],
                                          tf.distribute.ReductionToOneDevice())


def _probe():
    """Every kind of draw the towers make: stochastic depth (EfficientNet's per-example Dropout),
    a Dropout, and a keras-hub TransformerEncoder (two Dropouts and its attention's)."""
    image, tokens = keras.Input((1, 1, 1)), keras.Input((4, 8))
    depth = keras.layers.Dropout(0.5, noise_shape=(None, 1, 1, 1))(image)
    encoder = keras_hub.layers.TransformerEncoder(16, 2, dropout=0.5)
    return keras.Model([image, tokens], [depth, encoder(keras.layers.Dropout(0.5)(tokens))])


def _states(model):
    return [g.state.numpy().copy() for g in seed_generators(model)]


def test_every_drawing_layer_draws_statelessly_and_within_the_context_only():
    model = _probe()
    generators = seed_generators(model)
    encoder = model.layers[-1]
    assert len(generators) == 5
    assert encoder._self_attention_layer._dropout_layer.seed_generator in generators
    before = _states(model)

    def depth(**kwargs):
        with stateless_seeds(model, 7, 5, **kwargs):
            first = model(INPUTS, training=True)[0].numpy().ravel()
            second = model(INPUTS, training=True)[0].numpy().ravel()  # the next draw
        return first, second

    first, second = depth()
    assert 0 < np.count_nonzero(first) < 64 and not np.array_equal(first, second)
    # Re-entering with the same (seed, step, sub_batch) replays the masks (accumulation, remat).
    np.testing.assert_array_equal(depth()[0], first)
    for kwargs in (dict(sub_batch=1), dict(replica_id=1)):
        assert not np.array_equal(depth(**kwargs)[0], first)
    for got, want in zip(_states(model), before):
        np.testing.assert_array_equal(got, want)  # no draw advanced a generator
    assert all("next" not in vars(g) for g in generators)  # Keras' own next is back
    model(INPUTS, training=True)
    assert not np.array_equal(_states(model)[0], before[0])  # outside: Keras' stateful draws


@pytest.mark.parametrize("replicas", [2, 4])
def test_masks_differ_across_replicas_and_steps_and_repeat_on_a_rerun(replicas):
    strategy = _strategy(replicas)

    def draws(model, step):
        @tf.function
        def run(step):
            def replica():
                with stateless_seeds(model, 7, step):
                    return model(INPUTS, training=True)
            return strategy.run(replica)
        out = run(tf.constant(step, tf.int64))
        return [np.concatenate([t.numpy().ravel() for t in outputs]) for outputs in
                zip(*(strategy.experimental_local_results(o) for o in out))]

    with strategy.scope():
        model, rerun = _probe(), _probe()
    rerun.set_weights(model.get_weights())  # other Keras generators and seeds: same streams
    before = _states(model)
    step3 = draws(model, 3)
    for i in range(replicas):
        for j in range(i):
            assert not np.allclose(step3[i], step3[j])
        assert not np.allclose(step3[i][:64], 0) and not np.allclose(step3[i][:64], 2)
    for again in (draws(rerun, 3), draws(model, 3)):
        for got, want in zip(again, step3):
            np.testing.assert_array_equal(got, want)
    for got, want in zip(draws(model, 4), step3):
        assert not np.allclose(got, want)
    for got, want in zip(_states(model), before):
        np.testing.assert_array_equal(got, want)


VOCAB, SEQ, IMAGE, LOCAL_BATCH = 50, 8, 32, 4


def _objective(strategy, init_seed):
    config = base.get_config()
    config.model.text_size_name = "nano"
    config.model.max_sequence_length = SEQ
    config.model.text_dropout = 0.3
    config.model.drop_connect_rate = 0.5
    with strategy.scope():
        keras.utils.set_random_seed(init_seed)
        model = build_dual_encoder(config.model, VOCAB)
        objective = objectives.build_objective(config.objective, model,
                                               keras.optimizers.SGD(learning_rate=0.1), seed=3)

    @tf.function
    def step(batch):
        # The same local batch on every replica: per-replica losses differ only by the masks.
        out = strategy.run(objective.train_step, args=(batch,))
        return strategy.experimental_local_results(out["loss"])
    return objective, step


def _batch(seed):
    rng = np.random.default_rng(seed)
    n = LOCAL_BATCH
    mask = (np.arange(SEQ)[None] < rng.integers(3, SEQ + 1, n)[:, None]).astype(np.int32)
    return {"image": rng.uniform(size=(n, IMAGE, IMAGE, 3)).astype(np.float32),
            "text": {"token_ids": (rng.integers(5, VOCAB, (n, SEQ)) * mask).astype(np.int32),
                     "padding_mask": mask, "segment_ids": np.zeros((n, SEQ), np.int32)}}


def test_train_step_masks_per_replica_and_a_resumed_run_draws_the_same(tmp_path):
    """Objective.train_step on 2 replicas: each replica's masks differ (equal local batches give
    different local losses). Restoring the checkpoint of step 2 into a freshly built model (whose
    Keras generators start from scratch) and running step 3 gives step 3 of the uninterrupted
    run: the same losses and weights."""
    strategy = _strategy(2)
    objective, step = _objective(strategy, init_seed=0)
    checkpoint = tf.train.Checkpoint(model=objective.model, optimizer=objective.optimizer)
    losses = []
    for i in range(3):
        if i == 2:
            path = checkpoint.save(str(tmp_path / "ckpt"))
        losses.append([float(x) for x in step(_batch(i))])
        assert abs(losses[-1][0] - losses[-1][1]) > 1e-4, losses
    assert len({tuple(x) for x in losses}) == 3

    resumed, resumed_step = _objective(strategy, init_seed=1)
    tf.train.Checkpoint(model=resumed.model, optimizer=resumed.optimizer).restore(
        path).assert_existing_objects_matched()
    np.testing.assert_allclose([float(x) for x in resumed_step(_batch(2))], losses[2], rtol=1e-6)
    for a, b in zip(resumed.model.weights, objective.model.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


_WORKER = """
import json, sys
import tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
import keras
from align_tf.models.random_streams import stateless_seeds
with strategy.scope():
    model = keras.Sequential([keras.Input((1, 1, 1)),
                              keras.layers.Dropout(0.5, noise_shape=(None, 1, 1, 1))])

@tf.function
def draw():
    def replica():
        with stateless_seeds(model, 7, 3):
            return model(tf.ones((64, 1, 1, 1)), training=True)
    return strategy.run(replica)

mask = strategy.experimental_local_results(draw())[0].numpy().ravel()
json.dump(mask.tolist(), open(sys.argv[1], "w"))
"""


def test_two_worker_processes_draw_their_own_masks(tmp_path):
    """2 MultiWorkerMirroredStrategy processes (one replica each, loopback ports): worker w draws
    with global replica id w, so the workers' masks differ and equal this process's draws for
    replica ids 0 and 1."""
    from test_scale import PROCESS_TIMEOUT, _free_ports

    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3")
    procs = []
    try:
        for index in range(2):
            env["TF_CONFIG"] = json.dumps({"cluster": cluster,
                                           "task": {"type": "worker", "index": index}})
            procs.append(subprocess.Popen(
                [sys.executable, "-c", _WORKER, str(tmp_path / f"mask{index}.json")], cwd=REPO,
                env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        for proc in procs:
            output = proc.communicate(timeout=PROCESS_TIMEOUT)[0]
            assert proc.returncode == 0, output[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    masks = [json.loads((tmp_path / f"mask{i}.json").read_text()) for i in range(2)]
    assert masks[0] != masks[1]
    local = keras.Sequential([keras.Input((1, 1, 1)),
                              keras.layers.Dropout(0.5, noise_shape=(None, 1, 1, 1))])
    for replica_id, mask in enumerate(masks):
        with stateless_seeds(local, 7, 3, replica_id=replica_id):
            np.testing.assert_array_equal(local(tf.ones((64, 1, 1, 1)), training=True).numpy()
                                          .ravel(), mask)
