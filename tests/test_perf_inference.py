"""Inference speed-ups (issue 21): the opt-in bf16 precision computes the towers in
bfloat16 (embeddings close to, not equal to, float32 ones; still float32 unit vectors), and
text_embed runs the text tower on the batch's longest text only (same embeddings as the padded
batch, checked against the Keras model on padded tokens); swish without a gradient tape is plain
tf.nn.silu."""

import numpy as np
import pytest
import tensorflow as tf

from align_tf import export
from align_tf.configs import base
from align_tf.models.dual_encoder import build_dual_encoder
from align_tf.run_dir import RunDir
from align_tf.tokenizer import TextPreprocessor, build_vocabulary

CORPUS = ["a photo of a red star", "a blue circle on a white background", "two small green squares",
          "the yellow triangle", "an orange cat and a black dog"]
TEXTS = ["a red star", "the yellow triangle", "cat"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("perf_export")
    config = base.get_config()
    config.model.text_size_name = config.model.image_size_name = "nano"
    config.data.image_size, config.data.resize_size = 32, 40
    config.data.max_tokens = config.model.max_sequence_length = 32
    vocab = build_vocabulary(CORPUS, vocab_size=100)
    model = build_dual_encoder(config.model, len(vocab))
    for i, v in enumerate(model.text_encoder.trainable_variables):  # texts embed apart
        v.assign(tf.random.stateless_normal(v.shape, seed=(3, i)) * 0.2
                 + (1.0 if v.path.endswith("gamma") else 0.0))
    model_dir = str(root / "run")
    RunDir(model_dir).save_model(model, config, vocab)
    paths = {p: export.export_model_dir(model_dir, str(root / p), templates="none", precision=p)
             for p in export.PRECISIONS}
    return {"model": model, "vocab": vocab, "config": config,
            **{p: tf.saved_model.load(path) for p, path in paths.items()}}


def test_bf16_export_is_close_to_fp32_but_computed_in_bf16(run):
    images = tf.random.stateless_uniform([3, 48, 40, 3], seed=(1, 2))
    texts = tf.constant(TEXTS)
    for fn, x in (("image_embed", images), ("text_embed", texts)):
        fp32 = getattr(run["fp32"], fn)(x)["embeddings"]
        bf16 = getattr(run["bf16"], fn)(x)["embeddings"]
        assert bf16.dtype == tf.float32
        np.testing.assert_allclose(np.linalg.norm(bf16, axis=1), 1.0, atol=1e-5)
        diff = np.abs(bf16.numpy() - fp32.numpy()).max()
        assert 1e-4 < diff < 5e-2, (fn, diff)  # bfloat16 has 8 mantissa bits: ~4e-3 relative


def test_text_embed_trims_padding_without_changing_embeddings(run):
    preprocessor = TextPreprocessor(run["vocab"], sequence_length=run["config"].data.max_tokens)
    tokens = preprocessor(tf.constant(TEXTS))
    longest = int(tf.reduce_max(tf.reduce_sum(tokens["padding_mask"], 1)))
    assert longest < run["config"].data.max_tokens  # padding to trim
    trimmed = export._trim_padding(tokens)  # noqa: SLF001
    assert trimmed["token_ids"].shape[1] == longest
    ref = run["model"].embed_text(tokens).numpy()
    np.testing.assert_allclose(run["fp32"].text_embed(tf.constant(TEXTS))["embeddings"], ref,
                               atol=1e-5)


def test_unknown_precision_is_a_one_line_error(run, tmp_path):
    with pytest.raises(ValueError, match="precision must be one of"):
        export.export_model_dir(str(tmp_path), precision="fp16")



def test_swish_without_a_tape_is_plain_silu_and_with_one_keeps_the_fused_gradient():
    """Inference graphs get tf.nn.silu alone, without align_tf's custom-gradient wrapper (it cost
    1.1-1.2x in B0 inference); under a tape the XLA-fused gradient stays in place."""
    from align_tf.models.activations import swish

    def ops(fn, *args):
        return [op.type for op in tf.function(fn).get_concrete_function(*args).graph
                .get_operations()]

    x = tf.random.stateless_normal([4, 8], seed=(1, 1))
    assert ops(swish, x).count("IdentityN") == ops(tf.nn.silu, x).count("IdentityN")
    np.testing.assert_allclose(tf.function(swish)(x), x * tf.sigmoid(x), atol=1e-6)

    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = swish(x)
        return tape.gradient(y, x)

    def silu_grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.nn.silu(x)
        return tape.gradient(y, x)

    assert ops(grad, x).count("IdentityN") > ops(silu_grad, x).count("IdentityN")
    s = tf.sigmoid(x)
    np.testing.assert_allclose(tf.function(grad)(x), s * (1 + x * (1 - s)), atol=1e-6)
