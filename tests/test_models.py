"""Image tower, text tower and dual encoder."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from align_tf.configs import base
from align_tf.models import efficientnet as eff
from align_tf.models import text_encoder as bert
from align_tf.models.dual_encoder import build_dual_encoder
from model_test_case import ModelTestCase


def _tokens(batch, seq, vocab, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, seq + 1, batch)
    mask = (np.arange(seq)[None] < lengths[:, None]).astype(np.int32)
    return {"token_ids": tf.constant(rng.integers(5, vocab, (batch, seq)) * mask, tf.int32),
            "padding_mask": tf.constant(mask), "segment_ids": tf.zeros((batch, seq), tf.int32)}


class TestEfficientNet(ModelTestCase):
    def test_shared_checks(self):
        x = tf.random.uniform((2, 40, 40, 3), seed=1)
        self.run_model_checks(lambda: eff.efficientnet("nano"), x, (2, 80),
                              other_batch_inputs=tf.random.uniform((3, 57, 33, 3)))

    def test_matches_keras_applications_b0(self):
        """Same graph as keras.applications.EfficientNetB0 minus the top conv: copy its weights by
        layer name and compare the last block's output."""
        ref = keras.applications.EfficientNetB0(weights=None, include_top=False, input_shape=(64, 64, 3))
        ours = eff.efficientnet("b0", image_size=64)
        ref_layers = {layer.name: layer for layer in ref.layers}
        copied = 0
        for layer in ours.layers:
            if layer.weights:
                layer.set_weights(ref_layers[layer.name].get_weights())
                copied += 1
        assert copied == sum(1 for layer in ref.layers if layer.weights) - 3  # top_conv/bn, normalization
        x = np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype(np.float32)
        name = "block7a_project_bn"
        # keras.applications without ImageNet weights feeds x/255 to the stem; ours feeds 2x-1.
        expected = keras.Model(ref.input, ref.get_layer(name).output)(x * 255.0)
        got = keras.Model(ours.input, ours.get_layer(name).output)((x + 1.0) / 2.0)
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)
        assert ours.output_shape == (None, 320)
        assert "top_conv" not in {layer.name for layer in ours.layers}

    @pytest.mark.parametrize("size,width,blocks", [("b0", 320, 16), ("b7", 640, 55), ("l2", 1376, 88)])
    def test_named_sizes(self, size, width, blocks):
        """B0 and B7 counts are the published ones (B7: 55 blocks, 640-d); L2 follows from 4.3/5.3."""
        specs = eff.block_specs(eff.SIZES[size])
        assert len(specs) == blocks
        assert specs[-1]["filters_out"] == width

    def test_stride2_padding_is_fixed_asymmetric(self):
        """289 → 144 → 72 → 36 → 18 → 9 like the public ALIGN checkpoint (TF SAME would give 145)."""
        model = eff.efficientnet("nano", image_size=289)
        sizes = [model.get_layer(n).output.shape[1] for n in
                 ("stem_conv", "block2a_dwconv", "block3a_dwconv", "block4a_dwconv", "block6a_dwconv")]
        assert sizes == [144, 72, 36, 18, 9]
        assert model.get_layer("block2a_dwconv").fixed_pad == ((0, 1), (0, 1))
        assert model.get_layer("block3a_dwconv").fixed_pad == ((1, 2), (1, 2))

    @pytest.mark.parametrize("size", [64, 65, None])
    def test_stride2_convolutions_compute_the_fixed_pad(self, size):
        """Each stride-2 convolution computes VALID(zero-pad(x, (k//2 - 1, k//2))), checked with
        tf.nn on the layers' weights: at even sizes (where it runs "same" on the unpadded input),
        odd sizes and a tower built for any size (traced with a static size, then without)."""
        model = eff.efficientnet("nano", image_size=size)
        taps = ["stem_conv", "block2a_dwconv", "block3a_dwconv"]
        view = keras.Model(model.input, [model.get_layer(n).input for n in taps]
                           + [model.get_layer(n).output for n in taps])
        pixels = np.random.default_rng(0).uniform(size=(2, size or 66, size or 66, 3))
        calls = [view]
        if size is None:
            calls.append(tf.function(view, input_signature=[tf.TensorSpec([None] * 3 + [3])]))
        for call in calls:
            outs = call(tf.constant(pixels, tf.float32))
            for name, x, y in zip(taps, outs[:3], outs[3:]):
                layer = model.get_layer(name)
                half = layer.kernel_size[0] // 2
                padded = tf.pad(x, [[0, 0], [half - 1, half], [half - 1, half], [0, 0]])
                if name == "stem_conv":
                    want = tf.nn.conv2d(padded, layer.kernel, 2, "VALID")
                else:
                    want = tf.nn.depthwise_conv2d(padded, layer.kernel, [1, 2, 2, 1], "VALID")
                np.testing.assert_allclose(y, want, atol=1e-5, err_msg=name)

    def test_unknown_size_is_a_clear_error(self):
        with pytest.raises(ValueError, match="Unknown EfficientNet size 'b9'"):
            eff.efficientnet("b9")


@pytest.mark.parametrize("dtype_policy,atol", [("float32", 1e-5), ("mixed_bfloat16", 5e-2)])
def test_fused_batch_norm_matches_keras(dtype_policy, atol):
    """align_tf's fused BatchNorm equals keras.layers.BatchNormalization: outputs in training and
    inference, moving statistics after a few training calls, gradients wrt inputs, gamma, beta."""
    from align_tf.models.batch_norm import BatchNormalization

    kwargs = dict(axis=-1, epsilon=1e-3, momentum=0.9, dtype=dtype_policy)
    ref, fused = keras.layers.BatchNormalization(**kwargs), BatchNormalization(**kwargs)
    rng = np.random.default_rng(0)
    for layer in (ref, fused):
        layer.build((None, 5, 6, 4))
    weights = [rng.normal(1, 0.2, 4), rng.normal(0, 0.2, 4), rng.normal(0, 1, 4), rng.uniform(0.5, 2, 4)]
    for layer in (ref, fused):
        layer.set_weights([w.astype(np.float32) for w in weights])
    assert [w.path for w in fused.weights] == [w.path.replace(ref.name, fused.name) for w in ref.weights]

    def run(layer, x, training):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 3 * tf.range(4, dtype=tf.float32))
        grads = tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])
        return [tf.cast(t, tf.float32).numpy() for t in [y, *grads]]

    for step in range(3):
        x = tf.constant(rng.normal(2.0, 3.0, (3, 5, 6, 4)), tf.float32)
        for training in (True, False):
            for got, want in zip(run(fused, x, training), run(ref, x, training)):
                np.testing.assert_allclose(got, want, rtol=atol, atol=atol * max(1, np.abs(want).max()))
        for got, want in zip(fused.non_trainable_weights, ref.non_trainable_weights):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(fused.moving_variance.numpy(), weights[3])  # the statistics did move

    # Synchronized BatchNorm and non-4-D inputs stay on Keras' path; configs round-trip.
    assert fused._use_fused(x, None)
    assert not BatchNormalization(synchronized=True)._use_fused(x, None)
    assert not fused._use_fused(tf.zeros((2, 4)), None)
    assert isinstance(BatchNormalization.from_config(fused.get_config()), BatchNormalization)
    y = tf.function(lambda x: fused(x, training=True))(x)  # inside a tf.function too
    assert y.shape == x.shape


def test_swish_with_fused_gradient_matches_tf_silu():
    """align_tf's swish (XLA-fused gradient) equals tf.nn.silu in value and gradient."""
    from align_tf.models.activations import swish

    x = tf.constant(np.random.default_rng(0).normal(0, 4, (2, 5, 5, 3)), tf.float32)
    dy = tf.constant(np.random.default_rng(1).normal(size=x.shape), tf.float32)

    def value_and_grad(fn, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return y, tape.gradient(y, x, tf.cast(dy, y.dtype))

    want = value_and_grad(tf.nn.silu, x)
    for got in (value_and_grad(swish, x), tf.function(value_and_grad)(swish, x)):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-6)
    bf16 = value_and_grad(swish, tf.cast(x, tf.bfloat16))
    assert bf16[1].dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(bf16[1], tf.float32).numpy(), want[1].numpy(), atol=0.1)
    assert eff.efficientnet("nano").get_layer("stem_activation").activation is swish


class TestBert(ModelTestCase):
    def test_shared_checks(self):
        self.run_model_checks(lambda: bert.bert_text_encoder("nano", 100, embed_dim=24),
                              _tokens(3, 7, 100), (3, 24), other_batch_inputs=_tokens(5, 11, 100))

    def test_uses_exact_gelu(self):
        model = bert.bert_text_encoder("nano", 100)
        layer = model.get_layer("transformer_layer_0")
        x = tf.constant([[-1.5, 0.3, 2.0]])
        np.testing.assert_allclose(layer.activation(x).numpy(),
                                   tf.nn.gelu(x, approximate=False).numpy(), atol=1e-7)

    def test_padding_does_not_change_cls(self):
        model = bert.bert_text_encoder("nano", 100, embed_dim=8, dropout=0.0)
        short = _tokens(2, 5, 100, seed=3)
        padded = {k: tf.pad(v, [[0, 0], [0, 4]]) for k, v in short.items()}
        np.testing.assert_allclose(model(short).numpy(), model(padded).numpy(), atol=1e-5)

    @pytest.mark.parametrize("size,params", [("base", 109_482_240), ("large", 335_141_888)])
    def test_bert_parameter_counts(self, size, params):
        """BERT-base/large without the pooler have the published parameter counts."""
        model = bert.bert_text_encoder(size, 30522)
        pooler = bert.SIZES[size].hidden_dim * (bert.SIZES[size].hidden_dim + 1)
        assert model.count_params() == params - pooler


class TestDualEncoder:
    def test_embeddings_unit_norm_and_logits_are_cosine_over_temperature(self):
        config = base.get_config().model
        config.text_size_name = "nano"
        model = build_dual_encoder(config, 100)
        assert float(model.temperature.numpy()) == 1.0
        model.temperature.assign(0.25)
        out = model({"image": tf.random.uniform((3, 32, 32, 3)), "text": _tokens(3, 6, 100)})
        np.testing.assert_allclose(np.linalg.norm(out["image_embeddings"], axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(out["text_embeddings"], axis=1), 1.0, atol=1e-5)
        cos = out["image_embeddings"].numpy() @ out["text_embeddings"].numpy().T
        np.testing.assert_allclose(out["logits_per_image"].numpy(), cos / 0.25, atol=1e-4)
        assert model.text_encoder.output_shape[-1] == model.image_encoder.output_shape[-1] == 80

    def test_bfloat16_keeps_embeddings_and_temperature_float32(self):
        config = base.get_config().model
        config.text_size_name = "nano"
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            model = build_dual_encoder(config, 100)
            image = model.embed_image(tf.random.uniform((2, 32, 32, 3)))
            assert model.image_encoder.layers[-1].compute_dtype == "bfloat16"
        finally:
            keras.mixed_precision.set_global_policy("float32")
        assert image.dtype == tf.float32 and model.temperature.dtype == "float32"


def test_dual_encoder_is_plain_and_round_trips_its_config():
    """The model holds the towers and σ only (the objective holds everything else) and rebuilds
    from ``get_config`` with the same outputs."""
    from align_tf.models.dual_encoder import DualEncoder
    config = base.get_config().model
    config.text_size_name = "nano"
    config.min_temperature = 0.05
    model = build_dual_encoder(config, 100)
    towers = {id(w) for w in model.image_encoder.weights + model.text_encoder.weights}
    assert [w.path for w in model.weights if id(w) not in towers] == ["align/temperature"]
    model.temperature.assign(0.01)  # below the floor: the logits use min_temperature
    clone = DualEncoder.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    inputs = {"image": tf.random.uniform((2, 32, 32, 3), seed=3), "text": _tokens(2, 6, 100)}
    out, again = model(inputs), clone(inputs)
    for key in out:
        np.testing.assert_allclose(again[key].numpy(), out[key].numpy(), atol=1e-6)
    cos = out["image_embeddings"].numpy() @ out["text_embeddings"].numpy().T
    np.testing.assert_allclose(out["logits_per_image"].numpy(), cos / 0.05, atol=1e-4)


def test_flat_einsum_dense_matches_keras_with_2d_matmuls():
    """The attention projections (``flat_einsum``) give Keras EinsumDense's values and gradients,
    and their traced forward + backward has only 2-D MatMuls: no broadcasting BatchMatMulV2."""
    from align_tf.models.flat_einsum import FlatEinsumDense, tensordot_axes
    assert tensordot_axes("abc,cde->abde") == 1 and tensordot_axes("abcd,cde->abe") == 2
    assert tensordot_axes("abc,dce->abde") is None and tensordot_axes("...b,bc->...c") is None
    model = bert.bert_text_encoder("nano", vocabulary_size=50, embed_dim=8)
    flat = [l for l in model._flatten_layers() if isinstance(l, keras.layers.EinsumDense)]
    assert len(flat) == 4 and all(type(l) is FlatEinsumDense for l in flat)
    rng = np.random.default_rng(0)
    cases = [("abc,cde->abde", (3, 5, 8), (8, 2, 4), "de"),
             ("abcd,cde->abe", (3, 5, 2, 4), (2, 4, 8), "e")]
    for equation, x_shape, kernel_shape, bias_axes in cases:
        x = tf.constant(rng.normal(size=x_shape), tf.float32)
        kernel = rng.normal(size=kernel_shape)
        layers = []
        for cls in (keras.layers.EinsumDense, FlatEinsumDense):
            layer = cls(equation, output_shape=(None,) + kernel_shape[-len(bias_axes):],
                        bias_axes=bias_axes)
            layer.build(x_shape)
            layer.kernel.assign(kernel)
            layer.bias.assign(np.arange(layer.bias.shape.num_elements()).reshape(layer.bias.shape))
            layers.append(layer)

        def value_and_grads(layer, x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
                loss = tf.reduce_sum(y * y)
            return [y] + tape.gradient(loss, [x, layer.kernel, layer.bias])

        for want, got in zip(value_and_grads(layers[0], x), value_and_grads(layers[1], x)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
        graph = tf.function(value_and_grads).get_concrete_function(layers[1], x).graph
        types = {op.type for op in graph.get_operations()}
        assert "MatMul" in types and not types & {"BatchMatMulV2", "Einsum"}, equation
