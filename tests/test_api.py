"""The public Python API (issue [api]): ``align_tf.load`` from a run directory (checkpoint) and a
SavedModel, ``build_model``, ``export`` and the ``Model``'s embeddings and zero-shot results,
checked against the exported SavedModel's own signatures and a NumPy computation. Loading by
Hugging Face name is ``tests/test_pretrained.py``'s."""

import io
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import align_tf
from align_tf import pretrained

WORDS = ["a", "photo", "of", "red", "blue", "green", "circle", "square", "star", "cat", "dog"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + [chr(c) for c in range(97, 123)
                                                               if chr(c) not in WORDS]


def test_public_names_are_lazy_and_documented():
    assert set(align_tf.__all__) == {"Model", "PretrainedError", "build_model", "export", "load",
                                     "sample_images", "sample_pairs", "search"}
    for name in align_tf.__all__:
        assert getattr(align_tf, name).__doc__, name
    # align_tf.export is the export subpackage and, called, the API's export function.
    assert callable(align_tf.export) and align_tf.export.export_saved_model
    assert align_tf.search.Index.load.__doc__
    with pytest.raises(AttributeError):
        align_tf.no_such_name  # noqa: B018


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("ALIGN_TF_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert pretrained.cache_root() == os.path.join(str(tmp_path), ".cache", "align_tf")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert pretrained.cache_root() == "/xdg/align_tf"
    monkeypatch.setenv("ALIGN_TF_CACHE", "/mine")
    assert pretrained.cache_root() == "/mine"


@pytest.fixture(scope="module")
def models(tiny_run):
    """conftest's tiny trained run, loaded from its directory (the checkpoint: the run's
    savedmodel/ is set aside) and from its SavedModel."""
    root = os.path.dirname(tiny_run)
    os.makedirs(os.path.join(root, "copy"), exist_ok=True)
    run = os.path.join(root, "copy", "run")  # the run without savedmodel/: loads the checkpoint
    if not os.path.exists(run):
        shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("savedmodel"))
    return {"run": align_tf.load(run), "saved": align_tf.load(tiny_run), "run_dir": run}


def _images(n=3, size=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def test_every_source_embeds_the_same(models):
    texts = ["a red circle", "a photo of a cat", ""]
    pixels = _images().astype(np.float32) / 255.0
    ref_image = models["saved"].module.image_embed(tf.constant(pixels))["embeddings"].numpy()
    ref_text = models["saved"].module.text_embed(tf.constant(texts))["embeddings"].numpy()
    assert models["run"].path == models["run_dir"] and models["run"].keras_model
    assert models["saved"].keras_model is None and models["saved"].path.endswith("savedmodel")
    for name in ("run", "saved"):
        m = models[name]
        assert (m.image_size, m.similarity) == (48, "softmax"), name
        np.testing.assert_allclose(m.embed_images(pixels), ref_image, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(m.embed_texts(texts), ref_text, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(np.linalg.norm(ref_image, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ref_text, axis=1), 1.0, atol=1e-5)
    assert np.abs(ref_image[0] - ref_image[1]).max() > 1e-3  # the inputs matter


def test_images_as_paths_bytes_and_arrays(models, tmp_path):
    m = models["run"]
    images = _images(3, seed=1)
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    png = io.BytesIO()
    Image.fromarray(images[1]).save(png, format="PNG")
    batch = m.embed_images(images)  # uint8: divided by 255
    mixed = m.embed_images([paths[0], png.getvalue(), images[2].astype(np.float32) / 255.0])
    np.testing.assert_allclose(mixed, batch, atol=1e-5)
    np.testing.assert_allclose(m.embed_images(images[0]), batch[:1], atol=1e-5)  # one image
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.jpg is not a readable image"):
        m.embed_images([paths[0], str(tmp_path / "bad.jpg")])
    with pytest.raises(ValueError, match=r"images must be RGB"):
        m.embed_images(np.zeros((2, 8, 8), np.float32))


def test_zero_shot_matches_the_signature_and_numpy(models):
    classes = ["red circle", "blue square", "cat"]
    pixels = _images(2, seed=2).astype(np.float32) / 255.0
    saved = models["saved"]
    ref = saved.module.zero_shot_classify(tf.constant(pixels), tf.constant(classes))
    for name in ("saved", "run"):  # both bake the config's templates in (clip80)
        got = models[name].zero_shot(pixels, classes)
        np.testing.assert_allclose(got["probabilities"], ref["probabilities"].numpy(), atol=1e-5)
        np.testing.assert_allclose(got["logits"], ref["logits"].numpy(), atol=1e-4)
    # Other templates, against NumPy: mean of the prompts' unit embeddings, re-normalised.
    templates = ["a {}", "{} !"]
    got = saved.zero_shot(list(pixels), classes, templates=templates)
    prompts = saved.embed_texts([t.format(c) for c in classes for t in templates])
    centres = prompts.reshape(3, 2, -1).mean(1)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    logits = saved.embed_images(pixels) @ centres.T / float(saved.module.temperature.numpy())
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(got["probabilities"], probs, atol=1e-5)
    assert got["labels"] == [classes[i] for i in probs.argmax(1)]


def test_build_model_embeds_as_its_keras_model():
    """A new model of a preset: the API's embeddings are its Keras towers' (images already at the
    tower's size, so nothing is resized), L2-normalised."""
    built = align_tf.build_model("default", vocabulary=VOCAB)
    assert built.keras_model is not None and built.image_size == 48
    pixels = _images(2, size=48).astype(np.float32) / 255.0
    texts = ["a red star", "dog"]
    image = built.keras_model.embed_image(tf.constant(pixels), training=False).numpy()
    text = built.keras_model.embed_text(built.preprocessor(tf.constant(texts)),
                                        training=False).numpy()
    np.testing.assert_allclose(built.embed_images(pixels),
                               image / np.linalg.norm(image, axis=1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(built.embed_texts(texts),
                               text / np.linalg.norm(text, axis=1, keepdims=True), atol=1e-5)


@pytest.mark.slow
def test_export_of_a_built_model_loads_with_the_same_embeddings(tmp_path):
    built = align_tf.build_model("default", vocabulary=VOCAB)
    path = align_tf.export(built, str(tmp_path / "sm"), templates="simple")
    loaded = align_tf.load(path)
    np.testing.assert_allclose(loaded.embed_texts(["a cat"]), built.embed_texts(["a cat"]),
                               atol=1e-5)
    assert [t.decode() for t in loaded.module.prompt_templates.numpy()] == ["a photo of a {}."]


def test_export_of_a_loaded_savedmodel_copies_it_and_bad_paths_are_one_line(models, tmp_path):
    copy = align_tf.export(models["saved"], str(tmp_path / "copy"))
    assert sorted(os.listdir(copy)) == sorted(os.listdir(models["saved"].path))
    with pytest.raises(FileNotFoundError, match="neither a directory nor a Hugging Face repo id"):
        align_tf.load(str(tmp_path / "missing" / "x"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no saved_model.pb"):
        align_tf.load(tmp_path / "empty")
