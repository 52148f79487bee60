"""The SavedModel / TF Hub export (issue 3), checked from a consumer that cannot import align_tf.

One tiny randomly initialised model (nano towers, a vocabulary learned from a few strings,
σ = 0.05 so the temperature matters) is saved as a training ``model_dir`` and exported once by the
real CLI, ``python -m align_tf.export --plugins=export_toy_plugin``: a user's module
(``tests/export_toy_plugin.py``) registers a toy signature of its own (``text_stats``: the
export's signature registry) before the export runs. A fresh Python process in which ``align_tf`` and
``keras_hub`` cannot be imported then ``hub.load``s it, runs every signature (as a signature and as
an attribute), the bad inputs and the fine-tuning wrappers, and hands its numbers back; they are
compared here with the in-memory Keras model on the same inputs.
"""

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from align_tf import export
from align_tf.configs import base
from align_tf.data.preprocessing import ImagePreprocessor
from align_tf.prompts import CLIP_IMAGENET_TEMPLATES
from align_tf.evaluation.zero_shot import class_embeddings
from align_tf.models.dual_encoder import build_dual_encoder
from align_tf.run_dir import RunDir
from align_tf.tokenizer import TextPreprocessor, build_vocabulary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_SIZE, RESIZE_SIZE = 32, 40
# One image at a time, against the exported signatures' batched preprocessing.
EVAL_PREPROCESSING = ImagePreprocessor(IMAGE_SIZE, RESIZE_SIZE)
TEMPERATURE = 0.05
ATOL = 1e-5

CORPUS = ["a photo of a red star", "a blue circle on a white background", "two small green squares",
          "the yellow triangle", "a big purple heart", "an orange cat and a black dog",
          "a photo of the cool car", "a drawing of many flowers"]
TEXTS = ["a red star", "a photo of a blue circle.", "zzz unknown words", "",
         " ".join(["a long caption about a red star"] * 400),  # far beyond max_tokens
         "un chat orange très mignon", "一只橘色的猫", "Ελληνικά κείμενα", "кошка и собака 🐱🐶",
         "a\u200bb\u00adc\tTABS\nnewline"]
CLASS_NAMES = ["red star", "blue circle", "cat", 'a "quoted" {} $1 \\1 name', ""]


def _smooth_images(rng, n, height, width):
    """Random smooth colour fields in [0, 1]: unlike i.i.d. noise (whose images all share the same
    statistics) they get clearly different embeddings from a random network."""
    coarse = rng.uniform(size=(n, 3, 3, 3)).astype(np.float32)
    return tf.image.resize(coarse, (height, width), method="bicubic").numpy().clip(0, 1)


def _cos_off_diagonal_max(x):
    x = np.asarray(x)
    cos = x @ x.T
    return float(np.max(cos[~np.eye(len(x), dtype=bool)]))


# ----------------------------------------------------------------------------- inputs and model

def _encoded_images(rng):
    """(name, bytes, reference uint8 RGB array) for every supported container and colour type."""
    from PIL import Image

    def encode(array, fmt, mode=None, **kw):
        buf = io.BytesIO()
        Image.fromarray(array, mode).save(buf, format=fmt, **kw)
        return buf.getvalue()

    def smooth(h, w, c=3):
        return np.round(255 * _smooth_images(rng, 1, h, w)[0]).astype(np.uint8)[..., :c]

    rgb = smooth(41, 30)
    gray = smooth(20, 23)[..., 0]
    rgba = np.concatenate([smooth(33, 41), rng.integers(0, 256, (33, 41, 1), np.uint8)], -1)
    bmp = smooth(25, 26)
    gif = encode(smooth(30, 30), "GIF")
    jpeg = encode(smooth(45, 50), "JPEG", quality=90)
    return [
        ("png_rgb", encode(rgb, "PNG"), rgb),
        ("png_gray", encode(gray, "PNG"), np.repeat(gray[..., None], 3, axis=-1)),
        ("png_rgba", encode(rgba, "PNG"), rgba[..., :3]),  # alpha is dropped
        ("bmp", encode(bmp, "BMP"), bmp),
        # GIF is palettised: the reference is PIL's own decoding of the file.
        ("gif", gif, np.asarray(Image.open(io.BytesIO(gif)).convert("RGB"))),
        # libjpeg builds differ (PIL vs TF) by a level here and there: TF's decoder is the reference.
        ("jpeg", jpeg, tf.io.decode_jpeg(jpeg, channels=3).numpy()),
    ]


def _randomize(model):
    """Weights a fresh init does not have: BERT at init embeds every text alike (cos > 0.9999),
    which would make text comparisons meaningless, and non-default BatchNorm statistics show that
    the export restored the non-trainable variables from the checkpoint too."""
    for i, v in enumerate(model.text_encoder.trainable_variables):
        offset = 1.0 if v.path.endswith("gamma") else 0.0
        v.assign(tf.random.stateless_normal(v.shape, seed=(3, i)) * 0.2 + offset)
    # Variances only: the towers' activations at init are tiny (~1e-5 at the last block), so
    # any visible moving-mean shift would drown the input signal.
    for i, v in enumerate(model.image_encoder.non_trainable_variables):
        if v.path.endswith("moving_variance"):
            v.assign(tf.random.stateless_uniform(v.shape, seed=(5, i), minval=0.8, maxval=1.2))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A training model_dir with a random nano model, exported by the CLI."""
    root = tmp_path_factory.mktemp("export")
    model_dir, out = str(root / "run"), str(root / "savedmodel")
    config = base.get_config()
    config.model.text_size_name = "nano"
    config.model.image_size_name = "nano"
    config.data.image_size, config.data.resize_size = IMAGE_SIZE, RESIZE_SIZE
    vocab = build_vocabulary(CORPUS, vocab_size=120)
    model = build_dual_encoder(config.model, len(vocab))
    _randomize(model)
    model.temperature.assign(TEMPERATURE)
    RunDir(model_dir).save_model(model, config, vocab)
    preprocessor = TextPreprocessor(vocab, sequence_length=config.data.max_tokens)

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
    # The real CLI, with a user's module that registers signatures of its own (--plugins).
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(REPO, "tests"), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "align_tf.export",
                           "--plugins=export_toy_plugin", f"--model_dir={model_dir}",
                           f"--output={out}", "--templates=clip80"], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"exported SavedModel to {out}" in proc.stdout
    # The message lists what the registry gives this model: the built-ins but the ALBEF one, the
    # toy signature, not the toy the model does not support.
    names = export.signature_names(model, preprocessor, image_size=IMAGE_SIZE)
    assert names == ["image_embed", "image_embed_encoded", "text_embed", "zero_shot_classify"]
    assert f"(signatures: {', '.join(names + ['text_stats'])})" in proc.stdout
    return {"model": model, "preprocessor": preprocessor, "vocab": vocab, "path": out,
            "model_dir": model_dir, "config": config}


CONSUMER = r'''
"""Runs in a fresh interpreter with align_tf and keras_hub unimportable."""
import base64, importlib.abc, json, sys, types


class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("align_tf", "keras_hub"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked for this test)", name=name)
        return None


sys.meta_path.insert(0, _Block())  # ahead of the editable-install finder
for blocked in ("align_tf", "keras_hub"):
    try:
        __import__(blocked)
        sys.exit(f"{blocked} is importable in the consumer process")
    except ModuleNotFoundError:
        pass

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  registers the tokenizer ops the SavedModel uses

try:
    import tensorflow_hub as hub
except ModuleNotFoundError as e:
    # tensorflow_hub 0.16.1 imports pkg_resources, gone from setuptools >= 82 (tensorflow/hub#934).
    if e.name != "pkg_resources":
        raise
    from packaging.version import parse as parse_version
    sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse_version)
    import tensorflow_hub as hub
    print("note: pkg_resources shim used for tensorflow_hub")

path, in_path, out_path = sys.argv[1:4]
inputs = np.load(in_path)
spec = json.load(open(in_path + ".json"))
texts, class_names = spec["texts"], spec["class_names"]
encoded = [base64.b64decode(b) for b in spec["encoded"]]
mixed = [base64.b64decode(b) for b in spec["mixed"]]
m = hub.load(path)
out, report = {}, {"signatures": sorted(m.signatures)}


def both(name, **kwargs):
    """The signature and the attribute function must agree; returns the signature's outputs."""
    sig = m.signatures[name](**{k: tf.constant(v) for k, v in kwargs.items()})
    attr = getattr(m, name)(*[tf.constant(v) for v in kwargs.values()])
    assert sorted(sig) == sorted(attr), (sorted(sig), sorted(attr))
    for k in sig:
        if sig[k].dtype == tf.bool:
            np.testing.assert_array_equal(sig[k].numpy(), attr[k].numpy())
        else:
            np.testing.assert_allclose(sig[k].numpy(), attr[k].numpy(), atol=1e-6)
    return {k: v.numpy() for k, v in sig.items()}


for key in ("images_a", "images_b", "images_c"):
    out[f"image_embed/{key}"] = both("image_embed", images=inputs[key])["embeddings"]
out["image_embed_encoded"] = both("image_embed_encoded", encoded=np.array(encoded, object))["embeddings"]
try:  # corrupt images among the good ones: flagged, never an error
    res = both("image_embed_encoded", encoded=np.array(mixed, object))
    out["mixed/embeddings"], out["mixed/valid"] = res["embeddings"], res["valid"]
except Exception as e:  # noqa: BLE001  reported, so the other checks still run
    report["mixed_error"] = f"{type(e).__name__}: {str(e)[:1000]}"
out["text_embed"] = both("text_embed", texts=np.array(texts, object))["embeddings"]
stats = both("text_stats", texts=np.array(texts, object))  # the tests' own signature
out["text_stats/num_tokens"], out["text_stats/first"] = stats["num_tokens"], stats["first"]
zs = both("zero_shot_classify", images=inputs["images_a"], class_names=np.array(class_names, object))
out["zero_shot/probabilities"], out["zero_shot/logits"] = zs["probabilities"], zs["logits"]
out["class_embeddings"] = m.class_embeddings(tf.constant(class_names))["embeddings"].numpy()
out["image_tower"] = m.image_tower(tf.constant(inputs["images_b"])).numpy()
out["text_tower"] = m.text_tower(tf.constant(texts)).numpy()
report["attributes"] = {
    "image_size": int(m.image_size.numpy()), "resize_size": int(m.resize_size.numpy()),
    "max_tokens": int(m.max_tokens.numpy()), "embedding_dim": int(m.embedding_dim.numpy()),
    "temperature": float(m.temperature.numpy()),
    "prompt_templates": [t.decode() for t in m.prompt_templates.numpy()],
    "vocab": open(m.vocab_file.asset_path.numpy().decode(), encoding="utf-8").read().splitlines(),
    "num_variables": len(m.variables), "num_trainable": len(m.trainable_variables),
}


def outcome(fn):
    """'ok' + output shapes (and whether embeddings are finite unit vectors), or the error."""
    try:
        res = fn()
    except Exception as e:  # noqa: BLE001  the test inspects the type and message
        return {"error": type(e).__name__, "message": str(e)[:2000]}
    res = {k: v.numpy() for k, v in res.items()}
    info = {"ok": True, "shapes": {k: list(v.shape) for k, v in res.items()}}
    if "embeddings" in res and len(res["embeddings"]):
        info["unit_norm"] = bool(np.allclose(np.linalg.norm(res["embeddings"], axis=1), 1, atol=1e-5))
    return info


sig = m.signatures
z = tf.zeros
cases = {
    "empty_images": lambda: m.image_embed(z([0, 17, 23, 3])),
    "empty_images_sig": lambda: sig["image_embed"](images=z([0, 17, 23, 3])),
    "empty_encoded": lambda: m.image_embed_encoded(tf.constant([], tf.string)),
    "empty_texts": lambda: m.text_embed(tf.constant([], tf.string)),
    "empty_zero_shot_images": lambda: m.zero_shot_classify(z([0, 8, 8, 3]), tf.constant(["a", "b"])),
    "empty_class_names": lambda: m.zero_shot_classify(z([2, 8, 8, 3]), tf.constant([], tf.string)),
    "odd_texts": lambda: m.text_embed(tf.constant(texts)),
    "invalid_utf8_text": lambda: m.text_embed(tf.constant([b"caf\xe9 \xff\xfe", b"\x80"])),
    "rank3_attr": lambda: m.image_embed(z([32, 32, 3])),
    "rank3_sig": lambda: sig["image_embed"](images=z([32, 32, 3])),
    "gray_channels_sig": lambda: sig["image_embed"](images=z([2, 32, 32, 1])),
    "rgba_channels_attr": lambda: m.image_embed(z([2, 32, 32, 4])),
    "rgba_channels_zero_shot_sig": lambda: sig["zero_shot_classify"](
        images=z([2, 32, 32, 4]), class_names=tf.constant(["a"])),
    "uint8_images_sig": lambda: sig["image_embed"](images=tf.zeros([1, 32, 32, 3], tf.uint8)),
    "pixels_0_255": lambda: m.image_embed(tf.fill([1, 32, 32, 3], 200.0)),
    "nan_pixels": lambda: sig["image_embed"](images=tf.fill([1, 32, 32, 3], float("nan"))),
    "zero_height": lambda: m.image_embed(z([1, 0, 32, 3])),
    "texts_rank2_sig": lambda: sig["text_embed"](texts=tf.constant([["a", "b"]])),
    "class_names_rank2_sig": lambda: sig["zero_shot_classify"](
        images=z([1, 8, 8, 3]), class_names=tf.constant([["a"]])),
}
report["cases"] = {name: outcome(fn) for name, fn in cases.items()}


def finetune(layer, x, ref):
    """Output equals the tower's; one gradient step reaches every trainable weight."""
    y0 = layer(x, training=False).numpy()
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(layer(x, training=True)))
    pairs = [(v, tf.convert_to_tensor(g))
             for v, g in zip(layer.trainable_weights, tape.gradient(loss, layer.trainable_weights))
             if g is not None]
    # A step of norm 0.5 whatever the gradient scale (a random tower's gradients are tiny).
    scale = 0.5 / (tf.linalg.global_norm([g for _, g in pairs]) + 1e-30)
    for v, g in pairs:
        v.assign_sub(scale * g)
    y1 = layer(x, training=False).numpy()
    return {"max_diff": float(np.max(np.abs(y0 - ref))), "num_trainable": len(layer.trainable_weights),
            "all_grads": len(pairs) == len(layer.trainable_weights), "changed": bool(np.any(np.abs(y1 - y0) > 1e-6))}


pixels = tf.constant(inputs["images_b"])
tower_refs = {"image_tower": (pixels, out["image_tower"]), "text_tower": (tf.constant(texts[:3]), out["text_tower"][:3])}
report["towers"] = {name: len(getattr(m, name).trainable_variables) for name in tower_refs}
report["hub_keras_layer"] = {}
for name, (x, ref) in tower_refs.items():
    fresh = hub.load(path)  # fine-tuning changes the weights: each wrapper gets its own copy
    report["hub_keras_layer"][name] = finetune(hub.KerasLayer(getattr(fresh, name), trainable=True), x, ref)
import keras  # Keras 3 (TF's own dependency); tf_keras above was hub's
report["tfsm_layer"] = {}
for name, (x, ref) in tower_refs.items():
    report["tfsm_layer"][name] = finetune(keras.layers.TFSMLayer(path, call_endpoint=name), x, ref)

report["modules"] = {mod: mod in sys.modules for mod in ("align_tf", "keras_hub")}
np.savez(out_path, **out)
json.dump(report, open(out_path + ".json", "w"))
'''


def _mixed(encoded):
    """``(bytes, valid)``: the good images of ``_encoded_images`` (in order) with bad ones between.

    Bad: JPEGs cut short (after 200 bytes, and only the 2-byte end marker missing: TF's decoder
    rejects both rather than returning a partly grey image), a PNG cut in half, bytes that are
    no image, and empty bytes."""
    jpeg, png = encoded[-1][1], encoded[0][1]
    bad = [jpeg[:200], jpeg[:-2], png[:len(png) // 2], b"definitely not an image", b""]
    good = [e[1] for e in encoded]
    out = []
    for i, image in enumerate(good):
        if i < len(bad):
            out.append((bad[i], False))
        out.append((image, True))
    return out


@pytest.fixture(scope="module")
def consumer(exported, tmp_path_factory):
    """Runs CONSUMER on the export; returns (outputs, report, inputs)."""
    work = tmp_path_factory.mktemp("consumer")
    rng = np.random.default_rng(0)
    inputs = {"images_a": _smooth_images(rng, 3, 50, 45),
              "images_b": _smooth_images(rng, 2, IMAGE_SIZE, IMAGE_SIZE),
              "images_c": _smooth_images(rng, 2, 7, 9)}
    encoded = _encoded_images(rng)
    in_path, out_path = str(work / "inputs.npz"), str(work / "outputs.npz")
    np.savez(in_path, **inputs)
    with open(in_path + ".json", "w") as f:
        json.dump({"texts": TEXTS, "class_names": CLASS_NAMES,
                   "encoded": [base64.b64encode(e[1]).decode() for e in encoded],
                   "mixed": [base64.b64encode(b).decode() for b, _ in _mixed(encoded)]}, f)
    script = work / "consumer.py"
    script.write_text(CONSUMER)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
    # -I: no PYTHONPATH, no user site, not even the script's directory on sys.path.
    proc = subprocess.run([sys.executable, "-I", str(script), exported["path"], in_path, out_path],
                          capture_output=True, text=True, env=env, cwd=str(work), timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    with open(out_path + ".json") as f:
        report = json.load(f)
    return dict(np.load(out_path)), report, inputs, encoded


# ------------------------------------------------------------------------------------- the tests

def test_consumer_cannot_import_align_tf(consumer):
    report = consumer[1]
    assert report["modules"] == {"align_tf": False, "keras_hub": False}
    assert report["signatures"] == ["image_embed", "image_embed_encoded", "text_embed",
                                    "text_stats", "zero_shot_classify"]


def test_a_signature_registered_outside_the_package_reaches_the_consumer(exported, consumer):
    """``text_stats``, registered by this module in the CLI's process, through ``hub.load``."""
    outputs = consumer[0]
    tokens = exported["preprocessor"](tf.constant(TEXTS))["padding_mask"].numpy().sum(axis=1)
    np.testing.assert_array_equal(outputs["text_stats/num_tokens"], tokens)
    np.testing.assert_allclose(outputs["text_stats/first"], outputs["text_embed"][:, 0],
                               atol=1e-6)


def test_image_embed_matches_keras_with_eval_preprocessing(exported, consumer):
    outputs, _, inputs, _ = consumer
    model = exported["model"]
    for key in ("images_a", "images_b", "images_c"):
        pixels = tf.stack([EVAL_PREPROCESSING(im) for im in inputs[key]])
        ref = model.embed_image(pixels, training=False).numpy()
        np.testing.assert_allclose(outputs[f"image_embed/{key}"], ref, atol=ATOL, err_msg=key)
        np.testing.assert_allclose(np.linalg.norm(ref, axis=1), 1.0, atol=1e-5)
    # The comparison means something only if embeddings depend on the image.
    assert _cos_off_diagonal_max(outputs["image_embed/images_a"]) < 0.999


def test_image_embed_encoded_matches_keras(exported, consumer):
    outputs, _, _, encoded = consumer
    model = exported["model"]
    ref = np.concatenate([
        model.embed_image(EVAL_PREPROCESSING(array)[None]).numpy()
        for _, _, array in encoded])
    got = outputs["image_embed_encoded"]
    for i, (name, _, _) in enumerate(encoded):
        np.testing.assert_allclose(got[i], ref[i], atol=ATOL, err_msg=name)
    assert _cos_off_diagonal_max(got) < 0.999


def test_image_embed_encoded_flags_corrupt_images_and_keeps_the_good_rows(consumer):
    """Through hub.load without align_tf: each bad image gets valid False and a zero row, the
    batch does not fail, and the good rows are bit-equal to a batch of only the good images."""
    outputs, report, _, encoded = consumer
    assert "mixed_error" not in report, report["mixed_error"]
    expected = np.array([ok for _, ok in _mixed(encoded)])
    valid, embeddings = outputs["mixed/valid"], outputs["mixed/embeddings"]
    assert valid.dtype == bool and valid.tolist() == expected.tolist()
    assert np.all(embeddings[~expected] == 0)
    np.testing.assert_array_equal(embeddings[expected], outputs["image_embed_encoded"])


def test_text_embed_matches_keras(exported, consumer):
    outputs, _, _, _ = consumer
    model, preprocessor = exported["model"], exported["preprocessor"]
    ref = model.embed_text(preprocessor(tf.constant(TEXTS))).numpy()
    np.testing.assert_allclose(outputs["text_embed"], ref, atol=ATOL)
    assert _cos_off_diagonal_max(ref[:3]) < 0.999


def test_zero_shot_classify_uses_templates_and_learned_temperature(exported, consumer):
    """Class embedding = renormalised mean over CLIP's 80 templates (the evaluation's function);
    logits = cos / σ with the learned σ."""
    outputs, report, inputs, _ = consumer
    model, preprocessor = exported["model"], exported["preprocessor"]

    def embed_text(texts):
        return model.embed_text(preprocessor(tf.constant(texts))).numpy()

    classes = class_embeddings(embed_text, CLASS_NAMES, CLIP_IMAGENET_TEMPLATES)
    np.testing.assert_allclose(outputs["class_embeddings"], classes, atol=ATOL)
    pixels = tf.stack([EVAL_PREPROCESSING(im) for im in inputs["images_a"]])
    logits = model.embed_image(pixels).numpy() @ classes.T / TEMPERATURE
    probs = tf.nn.softmax(logits).numpy()
    np.testing.assert_allclose(outputs["zero_shot/logits"], logits, atol=ATOL * 10, rtol=1e-5)
    np.testing.assert_allclose(outputs["zero_shot/probabilities"], probs, atol=ATOL)
    np.testing.assert_allclose(outputs["zero_shot/probabilities"].sum(axis=1), 1.0, atol=1e-5)
    # σ is what makes these probabilities: with σ = 1 they would be far flatter.
    assert np.ptp(logits, axis=1).max() > 0.2
    # The templates matter: the bare class names give other class embeddings.
    bare = class_embeddings(embed_text, CLASS_NAMES, ("{}",))
    assert np.max(np.abs(bare - classes)) > 1e-2
    assert report["attributes"]["prompt_templates"] == list(CLIP_IMAGENET_TEMPLATES)
    assert report["attributes"]["temperature"] == pytest.approx(TEMPERATURE)


def test_towers_and_attributes(exported, consumer):
    outputs, report, inputs, _ = consumer
    model, preprocessor = exported["model"], exported["preprocessor"]
    np.testing.assert_allclose(outputs["image_tower"],
                               model.image_encoder(inputs["images_b"]).numpy(), atol=ATOL)
    np.testing.assert_allclose(outputs["text_tower"],
                               model.text_encoder(preprocessor(tf.constant(TEXTS))).numpy(),
                               atol=ATOL)
    attrs = report["attributes"]
    assert (attrs["image_size"], attrs["resize_size"], attrs["max_tokens"]) == (
        IMAGE_SIZE, RESIZE_SIZE, exported["config"].data.max_tokens)
    assert attrs["embedding_dim"] == outputs["text_embed"].shape[1]
    assert attrs["vocab"] == exported["vocab"]  # the vocab_file asset
    assert attrs["num_trainable"] == len(model.image_encoder.trainable_variables) + len(
        model.text_encoder.trainable_variables) + 1  # + σ
    assert report["towers"] == {"image_tower": len(model.image_encoder.trainable_variables),
                                "text_tower": len(model.text_encoder.trainable_variables)}


def test_weights_are_stored_once(exported):
    """The SavedModel holds each float weight once (a Keras 3 variable saved next to the
    tf.Variable inside it would be a second, disconnected copy)."""
    model = exported["model"]
    reader = tf.train.load_checkpoint(os.path.join(exported["path"], "variables", "variables"))
    dtypes = reader.get_variable_to_dtype_map()
    shapes = reader.get_variable_to_shape_map()
    stored = sum(int(np.prod(shapes[k])) for k, d in dtypes.items() if d == tf.float32)
    expected = sum(int(np.prod(v.shape)) for v in model.image_encoder.variables
                   + model.text_encoder.variables if v.dtype == "float32") + 1  # + σ
    assert stored == expected


@pytest.mark.parametrize("wrapper", ["hub_keras_layer", "tfsm_layer"])
def test_towers_fine_tune_through_hub_and_keras_wrappers(consumer, wrapper):
    report = consumer[1]
    for tower, result in report[wrapper].items():
        assert result["max_diff"] <= ATOL, (tower, result)
        assert result["num_trainable"] == report["towers"][tower], (tower, result)
        assert result["all_grads"] and result["changed"], (tower, result)


def test_empty_and_unusual_inputs_give_valid_outputs(consumer, exported):
    cases = consumer[1]["cases"]
    dim = consumer[0]["text_embed"].shape[1]
    expected_shapes = {
        "empty_images": {"embeddings": [0, dim]}, "empty_images_sig": {"embeddings": [0, dim]},
        "empty_encoded": {"embeddings": [0, dim], "valid": [0]},
        "empty_texts": {"embeddings": [0, dim]},
        "empty_zero_shot_images": {"probabilities": [0, 2], "logits": [0, 2]},
        "empty_class_names": {"probabilities": [2, 0], "logits": [2, 0]},
        "odd_texts": {"embeddings": [len(TEXTS), dim]},
        "invalid_utf8_text": {"embeddings": [2, dim]},
    }
    for name, shapes in expected_shapes.items():
        assert cases[name].get("ok"), (name, cases[name])
        assert cases[name]["shapes"] == shapes, name
    assert cases["odd_texts"]["unit_norm"] and cases["invalid_utf8_text"]["unit_norm"]
    # The very long text is truncated to max_tokens, not rejected.
    tokens = exported["preprocessor"](tf.constant(TEXTS[4:5]))["token_ids"]
    assert tokens.shape[1] == exported["config"].data.max_tokens and np.all(tokens.numpy() > 0)


BAD_INPUTS = {
    # case: (exception types, words the message must contain)
    "rank3_attr": ({"TypeError"}, ["(32, 32, 3)", "(None, None, None, 3)"]),
    "rank3_sig": ({"InvalidArgumentError"}, ["[32,32,3]", "not compatible", "[?,?,?,3]"]),
    "gray_channels_sig": ({"InvalidArgumentError"}, ["[2,32,32,1]", "[?,?,?,3]"]),
    "rgba_channels_attr": ({"TypeError"}, ["(2, 32, 32, 4)", "(None, None, None, 3)"]),
    "rgba_channels_zero_shot_sig": ({"InvalidArgumentError"}, ["[2,32,32,4]", "[?,?,?,3]"]),
    "uint8_images_sig": ({"InvalidArgumentError", "TypeError", "ValueError"}, ["uint8"]),
    "pixels_0_255": ({"InvalidArgumentError"}, ["pixels in [0, 1]", "divide uint8 images by 255"]),
    "nan_pixels": ({"InvalidArgumentError"}, ["pixels in [0, 1]", "non-finite"]),
    "zero_height": ({"InvalidArgumentError"}, ["height and width > 0"]),
    "texts_rank2_sig": ({"InvalidArgumentError"}, ["[1,2]", "[?]"]),
    "class_names_rank2_sig": ({"InvalidArgumentError"}, ["[1,1]", "[?]"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_raise_clear_errors(consumer, case):
    result = consumer[1]["cases"][case]
    types, words = BAD_INPUTS[case]
    assert result.get("error") in types, result
    for word in words:
        assert word in result["message"], (word, result["message"][:600])


def test_saved_model_cli_lists_signatures(exported):
    cli = shutil.which("saved_model_cli")
    cmd = [cli] if cli else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    proc = subprocess.run(cmd + ["show", "--dir", exported["path"], "--all"], capture_output=True,
                          text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    dim = int(exported["model"].image_encoder.output_shape[-1])

    def block(name):
        start = text.index(f"signature_def['{name}']:")
        end = text.find("signature_def[", start + 1)
        return text[start:end if end > 0 else len(text)]

    expected = {
        "image_embed": {"inputs": {"images": ("DT_FLOAT", "(-1, -1, -1, 3)")},
                        "outputs": {"embeddings": ("DT_FLOAT", f"(-1, {dim})")}},
        "image_embed_encoded": {"inputs": {"encoded": ("DT_STRING", "(-1)")},
                                "outputs": {"embeddings": ("DT_FLOAT", f"(-1, {dim})"),
                                            "valid": ("DT_BOOL", "(-1)")}},
        "text_embed": {"inputs": {"texts": ("DT_STRING", "(-1)")},
                       "outputs": {"embeddings": ("DT_FLOAT", f"(-1, {dim})")}},
        "zero_shot_classify": {"inputs": {"images": ("DT_FLOAT", "(-1, -1, -1, 3)"),
                                          "class_names": ("DT_STRING", "(-1)")},
                               "outputs": {"probabilities": ("DT_FLOAT", "(-1, -1)"),
                                           "logits": ("DT_FLOAT", "(-1, -1)")}},
    }
    for name, io_spec in expected.items():
        b = block(name)
        for kind, tensors in io_spec.items():
            for tensor, (dtype, shape) in tensors.items():
                entry = b[b.index(f"{kind}['{tensor}'] tensor_info:"):]
                entry = entry[:entry.index("name:")]
                assert f"dtype: {dtype}" in entry and f"shape: {shape}" in entry, (name, entry)
        # Nothing beyond the documented tensors.
        assert b.count("tensor_info:") == sum(len(t) for t in io_spec.values()), b


# ------------------------------------------------------------------ in-process unit tests and CLI

def test_templates():
    assert export.get_templates("clip80") == tuple(CLIP_IMAGENET_TEMPLATES)
    assert len(export.get_templates("clip80")) == 80
    assert export.get_templates("simple") == ("a photo of a {}.",)
    assert export.get_templates("none") == ("{}",)
    with pytest.raises(ValueError, match="unknown templates"):
        export.get_templates("clip81")


def test_cli_help_and_errors(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
    run = lambda *a: subprocess.run([sys.executable, "-m", "align_tf.export", *a],  # noqa: E731
                                    capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    helped = run("--help")  # absl exits 1 after printing the help
    for flag in ("--model_dir", "--output", "--templates", "clip80", "simple", "none"):
        assert flag in helped.stdout, flag
    missing = run(f"--model_dir={tmp_path}", f"--output={tmp_path}/out")
    assert missing.returncode != 0
    assert "align_tf.export: error: no config.json" in missing.stderr
    assert "Traceback" not in missing.stderr


# ------------------------------------------------------------------ the signature registry

def _documented_signatures():
    """The names in the first column of export/SIGNATURES.md's signature table."""
    with open(os.path.join(REPO, "export", "SIGNATURES.md"), encoding="utf-8") as f:
        text = f.read()
    table = text.split("| signature | inputs | outputs |\n| --- | --- | --- |\n", 1)[1]
    rows = table.split("\n\n", 1)[0].splitlines()
    return [row.split("|")[1].strip().split("`")[1] for row in rows]


def test_signatures_md_lists_exactly_the_registered_signatures():
    assert _documented_signatures() == list(export.registered_signatures()) == [
        "image_embed", "image_embed_encoded", "text_embed", "zero_shot_classify",
        "image_text_match"]


def test_each_signature_is_chosen_by_what_the_model_supports(exported):
    model, preprocessor = exported["model"], exported["preprocessor"]
    names = lambda **kw: export.signature_names(model, preprocessor, **kw)  # noqa: E731
    # No image size: decoded images would differ in size, so no image_embed_encoded.
    assert names() == ["image_embed", "text_embed", "zero_shot_classify"]
    assert "image_text_match" not in names(image_size=IMAGE_SIZE)  # not an ALBEF model
    albef = types.SimpleNamespace(image_encoder=model.image_encoder, fusion=object())
    assert export.signature_names(albef, preprocessor)[-1] == "image_text_match"


@pytest.mark.parametrize("name, kwargs, message", [
    ("text_embed", {}, "already registered"),
    ("variables", {}, "attribute of the exported object"),
    ("_hidden", {}, "public Python identifier"),
    ("two words", {}, "public Python identifier"),
    ("toy", {"inputs": [tf.TensorSpec([None], tf.string)]}, "named tf.TensorSpecs"),
    ("toy", {"inputs": [export.TEXTS, export.TEXTS]}, "input names must differ"),
])
def test_register_signature_rejects_bad_registrations(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export.register_signature(name, **{"inputs": [export.TEXTS], **kwargs})
    assert "toy" not in export.registered_signatures()


def _readme_snippet(heading):
    """The first ```python block of docs/export.md (the README's hub-module page) after
    ``heading``."""
    with open(os.path.join(REPO, "docs", "export.md"), encoding="utf-8") as f:
        text = f.read()
    section = text[text.index(heading):]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_snippet_and_consumer_example_run_without_align_tf(exported, tmp_path):
    """README's "Use the exported module" snippet and export/consumer_example.py, run verbatim
    (only the module path changed) by an isolated interpreter that never imports align_tf."""
    snippet = _readme_snippet("## Use the exported module")
    assert 'hub.load("align_runs/default/savedmodel")' in snippet
    script = tmp_path / "snippet.py"
    script.write_text(snippet.replace("align_runs/default/savedmodel", exported["path"])
                      + "\nimport sys\nassert 'align_tf' not in sys.modules\n"
                      "assert probs.shape == (2, 3) and abs(float(tf.reduce_sum(probs)) - 2) < 1e-4\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
    for cmd in ([sys.executable, "-I", str(script)],
                [sys.executable, "-I", os.path.join(REPO, "export", "consumer_example.py"),
                 f"--savedmodel={exported['path']}", "--classes=red star,blue circle"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(tmp_path),
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "zero-shot over ['red star', 'blue circle'] with 80 prompt template(s)" in proc.stdout
