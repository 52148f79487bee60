"""SigLIP's sigmoid loss, objective, parameters and export (issue [siglip]).

The loss against a NumPy transcription of the formula and a dense float64 TF reference (value and
gradients w.r.t. the embeddings, t′ and b); MirroredStrategy over 2 and 4 logical CPUs, where the
chunked cross-replica loss must equal one device on the global batch; XLA; the parameters in the
model (config round trip, no weight decay or trust ratio); one train step; a SavedModel whose
zero-shot probabilities are sigmoid(t·cos + b).
"""

import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from align_tf import losses, objectives, optim, trainer
from align_tf.configs import base
from align_tf.models.dual_encoder import DualEncoder, build_dual_encoder

T, B = 3.0, -2.0  # away from SigLIP's init (10, -10), where σ(·) saturates and gradients vanish
ATOL = 1e-5


def numpy_sigmoid_loss(x, y, t, b):
    """-(1/N) Σ_i Σ_j log σ(z_ij (t x_iᵀy_j + b)), z = +1 on the diagonal, -1 elsewhere."""
    z = 2 * np.eye(len(x)) - 1
    return np.mean(np.sum(np.logaddexp(0.0, -z * (t * x @ y.T + b)), axis=1))


def _unit(rng, n, d):
    v = rng.normal(size=(n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _data(n=8, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return _unit(rng, n, d), _unit(rng, n, d)


def _reference_grads(x, y, t, b):
    """Loss and gradients w.r.t. (x, y, t′, b) of the dense formula in float64."""
    x, y = tf.constant(x, tf.float64), tf.constant(y, tf.float64)
    log_t, b = tf.Variable(math.log(t), dtype=tf.float64), tf.Variable(b, dtype=tf.float64)
    with tf.GradientTape() as tape:
        tape.watch([x, y])
        z = 2 * tf.eye(x.shape[0], dtype=tf.float64) - 1
        logits = tf.exp(log_t) * tf.matmul(x, y, transpose_b=True) + b
        loss = tf.reduce_mean(tf.reduce_sum(tf.nn.softplus(-z * logits), axis=1))
    return loss.numpy(), [g.numpy() for g in tape.gradient(loss, [x, y, log_t, b])]


def _loss_and_grads(x, y, t, b, jit_compile=False):
    x, y = tf.constant(x, tf.float32), tf.constant(y, tf.float32)
    log_t, b = tf.Variable(math.log(t)), tf.Variable(b)

    @tf.function(jit_compile=jit_compile)
    def run(x, y):
        with tf.GradientTape() as tape:
            tape.watch([x, y])
            out = losses.sigmoid_loss(x, y, tf.exp(log_t), b)
        return out, tape.gradient(out["loss"], [x, y, log_t, b])

    out, grads = run(x, y)
    return out, [g.numpy() for g in grads]


@pytest.mark.parametrize("jit_compile", [False, True])
def test_one_device_matches_numpy_and_float64_gradients(jit_compile):
    x, y = _data()
    out, grads = _loss_and_grads(x, y, T, B, jit_compile)
    np.testing.assert_allclose(out["loss"].numpy(), numpy_sigmoid_loss(x, y, T, B), rtol=1e-6)
    ref_loss, ref_grads = _reference_grads(x, y, T, B)
    np.testing.assert_allclose(out["loss"].numpy(), ref_loss, rtol=1e-6)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(got, want, atol=ATOL)
    accuracy = np.mean(np.argmax(x @ y.T, axis=1) == np.arange(len(x)))
    assert out["i2t_accuracy"].numpy() == pytest.approx(accuracy)


def test_finite_differences_in_t_prime_and_b():
    """The custom gradient of the scalars against central differences of the float64 NumPy loss."""
    x, y = _data(seed=1)
    _, grads = _loss_and_grads(x, y, T, B)
    h = 1e-5
    d_log_t = (numpy_sigmoid_loss(x, y, T * math.exp(h), B)
               - numpy_sigmoid_loss(x, y, T * math.exp(-h), B)) / (2 * h)
    d_b = (numpy_sigmoid_loss(x, y, T, B + h) - numpy_sigmoid_loss(x, y, T, B - h)) / (2 * h)
    np.testing.assert_allclose([grads[2], grads[3]], [d_log_t, d_b], rtol=1e-4)


def test_aligned_pairs_have_lower_loss_than_shuffled():
    x, _ = _data()
    aligned = losses.sigmoid_loss(tf.constant(x, tf.float32), tf.constant(x, tf.float32), 10., -5.)
    shuffled = losses.sigmoid_loss(tf.constant(x, tf.float32),
                                   tf.constant(x[::-1].copy(), tf.float32), 10., -5.)
    assert aligned["loss"] < shuffled["loss"]
    assert aligned["i2t_accuracy"] == 1.0


@pytest.mark.parametrize("num_replicas,n", [(2, 8), (4, 16), (4, 8), (2, 6)])
def test_replicas_equal_one_device_on_the_global_batch(num_replicas, n):
    """Each replica takes its rows of one global batch; the mean of the replicas' losses and the
    all-reduced gradients of loss / R w.r.t. every row, t′ and b equal the dense float64 loss.
    The cases cover C = gcd(N_local, R) chunked gathers: C = R (4 rows on 2 and 4 replicas),
    C < R (2 rows on 4), and one gather (3 rows on 2)."""
    x, y = _data(n=n, seed=2)
    rows = len(x) // num_replicas
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(num_replicas)],
                                              tf.distribute.ReductionToOneDevice())
    with strategy.scope():
        log_t, b = tf.Variable(math.log(T)), tf.Variable(B)
    gx, gy = tf.constant(x, tf.float32), tf.constant(y, tf.float32)

    def replica_fn(gx, gy):
        ctx = tf.distribute.get_replica_context()
        local = tf.range(rows) + ctx.replica_id_in_sync_group * rows
        with tf.GradientTape() as tape:
            tape.watch([gx, gy])
            out = losses.sigmoid_loss(tf.gather(gx, local), tf.gather(gy, local), tf.exp(log_t), b)
            scaled = out["loss"] / num_replicas
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(scaled, [gx, gy, log_t, b])]
        return ctx.all_reduce("SUM", [scaled, out["i2t_accuracy"] / num_replicas] + grads)

    result = tf.function(lambda: strategy.run(replica_fn, (gx, gy)))()
    loss, accuracy, *grads = [strategy.experimental_local_results(r)[0].numpy() for r in result]
    ref_loss, ref_grads = _reference_grads(x, y, T, B)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(got, want, atol=ATOL)
    assert accuracy == pytest.approx(np.mean(np.argmax(x @ y.T, axis=1) == np.arange(len(x))))


def _one_gather_sigmoid_loss(image, text, logit_scale, logit_bias):
    """A mutant of ``losses.sigmoid_loss``: one all_gather of every replica's texts, then scored in
    N_local-column chunks, so its logits are as small as the real loss's and only the gathered
    N_global × D texts break the memory claim."""
    context = tf.distribute.get_replica_context()
    everything = context.all_gather(text, axis=0)
    rows = image.shape[0]
    own = 2 * tf.eye(rows) - 1
    loss = 0.0
    for r in range(context.num_replicas_in_sync):
        logits = logit_scale * tf.matmul(image, everything[r * rows:(r + 1) * rows],
                                         transpose_b=True) + logit_bias
        z = tf.where(tf.equal(context.replica_id_in_sync_group, r), own, -tf.ones_like(own))
        loss += tf.reduce_sum(tf.nn.softplus(-z * logits))
    return {"loss": loss / rows}


def _tensors_above_local_square(loss_fn, num_replicas=4, rows=8, dim=4):
    """The float tensors with more than N_local² elements in ``loss_fn``'s traced loss + gradient
    on ``num_replicas`` replicas (``rows`` each, D = ``dim``). Each replica's embeddings are fed
    per replica, so no tensor of the global batch's size is an input and none is exempt: an
    all-gathered N_global × D text matrix counts as a violation, as do N_local × N_global
    logits."""
    x, y = _data(n=num_replicas * rows, d=dim, seed=3)
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(num_replicas)],
                                              tf.distribute.ReductionToOneDevice())
    local_x, local_y = (strategy.experimental_distribute_values_from_function(
        lambda ctx, v=v: tf.constant(v[ctx.replica_id_in_sync_group * rows:][:rows], tf.float32))
        for v in (x, y))

    def replica_fn(image, text):
        with tf.GradientTape() as tape:
            tape.watch([image, text])
            loss = loss_fn(image, text, tf.constant(T), tf.constant(B))["loss"]
        return tape.gradient(loss, [image, text])

    graph = tf.function(lambda: strategy.run(replica_fn, (local_x, local_y))
                        ).get_concrete_function().graph
    too_big = []
    for op in graph.get_operations():
        for out in op.outputs:
            if out.dtype == tf.float32:
                assert out.shape.is_fully_defined(), f"{op.type} {out.shape}: size unknown"
                if out.shape.num_elements() > rows * rows:
                    too_big.append(f"{op.type} {out.shape}")
    return too_big


def test_no_replica_holds_global_logits_or_all_texts_forward_or_backward():
    """The chunked gathers: in the traced loss + gradient on 4 replicas (8 rows each, D = 4) no
    float tensor is larger than N_local² = 64 elements, so neither the N_local × N_global = 256
    logits nor the N_global × D = 128 gathered texts ever exist, forward or backward. The check
    can fail: a mutant that gathers all texts at once (logits still chunked) is caught."""
    assert _tensors_above_local_square(losses.sigmoid_loss) == []
    mutant = _tensors_above_local_square(_one_gather_sigmoid_loss)
    assert any(t.endswith("(32, 4)") for t in mutant), mutant


# ----------------------------------------------------------------------------- model and objective

def _config(similarity="sigmoid"):
    c = base.get_config()
    c.model.text_size_name = "nano"
    c.model.max_sequence_length = c.data.max_tokens = 8
    c.model.similarity = similarity
    c.objective.name = "sigmoid" if similarity == "sigmoid" else "contrastive"
    return c


def test_model_parameters_init_and_round_trip_through_get_config():
    config = _config()
    config.model.logit_bias_init = -7.0
    model = build_dual_encoder(config.model, 50)
    assert model.temperature is None
    assert float(model.log_logit_scale.numpy()) == pytest.approx(math.log(10.0))
    assert float(model.logit_bias.numpy()) == -7.0
    for v in (model.log_logit_scale, model.logit_bias):
        assert v.dtype == "float32" and not v._autocast and v.trainable  # noqa: SLF001
    clone = DualEncoder.from_config(model.get_config())
    assert (clone.similarity, clone.logit_scale_init, clone.logit_bias_init) == ("sigmoid", 10., -7.)
    assert [v.path for v in clone.weights] == [v.path for v in model.weights]
    softmax = build_dual_encoder(_config("softmax").model, 50)
    assert not hasattr(softmax, "logit_bias") and softmax.temperature is not None


@pytest.mark.parametrize("name", ["lamb", "adamw"])
def test_t_prime_and_b_get_no_weight_decay_nor_trust_ratio(name):
    config = _config()
    config.optim.name = name
    model = build_dual_encoder(config.model, 50)
    optimizer = optim.build_optimizer(config.optim, total_steps=10)
    optimizer.build(model.trainable_variables)
    # Keras 3's variable.name is the short name the patterns are searched in.
    assert (model.log_logit_scale.name, model.logit_bias.name) == ("log_logit_scale", "logit_bias")
    for v in (model.log_logit_scale, model.logit_bias):
        assert not optimizer._use_weight_decay(v)  # noqa: SLF001
        if name == "lamb":
            assert any(re.search(p, v.name) for p in optimizer.exclude_from_layer_adaptation)
    kernel = next(v for v in model.trainable_variables if v.name == "kernel")
    assert optimizer._use_weight_decay(kernel)  # noqa: SLF001


def test_validate_config_needs_a_sigmoid_model_for_the_sigmoid_objective():
    config = _config()
    trainer.validate_config(config)
    config.model.similarity = "softmax"
    with pytest.raises(trainer.ConfigError, match="objective.name='sigmoid' needs "
                                                  "model.similarity='sigmoid'") as error:
        trainer.validate_config(config)
    assert "\n" not in str(error.value)
    config = _config()
    config.objective.name = "contrastive"
    with pytest.raises(trainer.ConfigError, match="needs model.similarity='softmax'"):
        trainer.validate_config(config)


def test_objective_train_step_moves_t_prime_and_b():
    config = _config()
    model = build_dual_encoder(config.model, 50)
    optimizer = optim.build_optimizer(config.optim, total_steps=10)
    objective = objectives.build_objective(config.objective, model, optimizer)
    assert isinstance(objective, objectives.SigmoidObjective)
    rng = np.random.default_rng(0)
    batch = {"image": rng.uniform(size=(4, 32, 32, 3)).astype(np.float32),
             "text": {"token_ids": rng.integers(5, 50, (4, 8)).astype(np.int32),
                      "padding_mask": np.ones((4, 8), np.int32),
                      "segment_ids": np.zeros((4, 8), np.int32)}}
    before = [float(model.log_logit_scale.numpy()), float(model.logit_bias.numpy())]
    optimizer.iterations.assign(5)  # past 0 of the warmup, so the learning rate is not 0
    metrics = tf.function(objective.train_step)(batch)
    assert set(metrics) == set(objective.scalars)
    assert float(metrics["logit_scale"]) == pytest.approx(10.0)
    assert float(metrics["logit_bias"]) == pytest.approx(-10.0)
    assert np.isfinite(float(metrics["loss"])) and float(metrics["skipped_steps"]) == 0
    after = [float(model.log_logit_scale.numpy()), float(model.logit_bias.numpy())]
    assert after[0] != before[0] and after[1] != before[1]


def test_checkpoint_resumes_the_sigmoid_objective_exactly(tmp_path):
    """trainer.checkpoint_for / trainer.restore: a freshly built sigmoid objective (other initial
    weights) restored from step 2's checkpoint takes step 3 exactly as the uninterrupted run,
    t′ and b included."""
    config = _config()
    config.model.text_dropout = 0.0

    def build(seed):
        keras.utils.set_random_seed(seed)
        model = build_dual_encoder(config.model, 50)
        optimizer = optim.build_optimizer(config.optim, total_steps=10)
        objective = objectives.build_objective(config.objective, model, optimizer, seed=0)
        return objective, tf.function(objective.train_step)

    rng = np.random.default_rng(0)
    batches = [{"image": rng.uniform(size=(4, 32, 32, 3)).astype(np.float32),
                "text": {"token_ids": rng.integers(5, 50, (4, 8)).astype(np.int32),
                         "padding_mask": np.ones((4, 8), np.int32),
                         "segment_ids": np.zeros((4, 8), np.int32)}} for _ in range(3)]
    objective, step = build(0)
    objective.optimizer.iterations.assign(5)  # past the warmup's 0
    for batch in batches[:2]:
        step(batch)
    path = trainer.checkpoint_for(objective).save(str(tmp_path / "ckpt"))
    want = float(step(batches[2])["loss"])

    resumed, resumed_step = build(1)
    trainer.restore(resumed, path)
    assert float(resumed_step(batches[2])["loss"]) == pytest.approx(want, rel=1e-6)
    for a, b in zip(resumed.model.weights, objective.model.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7, err_msg=a.path)


# ----------------------------------------------------------------------------- export

def test_saved_model_probabilities_are_independent_sigmoids(tmp_path):
    import tensorflow_hub as hub

    from align_tf import export
    from align_tf.run_dir import RunDir, load_model
    from align_tf.tokenizer import build_vocabulary
    from test_export import CLASS_NAMES, CORPUS, _randomize, _smooth_images

    config = _config()
    vocab = build_vocabulary(CORPUS, vocab_size=120)
    model = build_dual_encoder(config.model, len(vocab))
    _randomize(model)
    model.log_logit_scale.assign(math.log(4.0))
    model.logit_bias.assign(1.5)
    run = RunDir(str(tmp_path / "run"))
    run.save_model(model, config, vocab)
    loaded_model, preprocessor, _ = load_model(run.path)  # t′ and b through the checkpoint
    path = export.export_saved_model(loaded_model, preprocessor, str(tmp_path / "saved"),
                                     image_size=32, templates="simple")

    m = hub.load(path)
    assert m.similarity.numpy() == b"sigmoid" and not hasattr(m, "temperature")
    assert float(m.log_logit_scale.numpy()) == pytest.approx(math.log(4.0))
    assert float(m.logit_bias.numpy()) == 1.5
    images = tf.constant(_smooth_images(np.random.default_rng(0), 3, 32, 32))
    names = tf.constant(CLASS_NAMES[:3])
    out = m.zero_shot_classify(images, names)
    cos = (m.image_embed(images)["embeddings"].numpy()
           @ m.class_embeddings(names)["embeddings"].numpy().T)
    np.testing.assert_allclose(out["logits"].numpy(), 4.0 * cos + 1.5, atol=ATOL)
    np.testing.assert_allclose(out["probabilities"].numpy(), 1 / (1 + np.exp(-(4.0 * cos + 1.5))),
                               atol=ATOL)
    assert np.all(np.abs(out["probabilities"].numpy().sum(axis=1) - 1.0) > 0.1)
