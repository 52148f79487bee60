"""[mling] The full ``mling_tiny`` run (slow: ~10 min on 2 cores): it trains, evaluates and
exports; held-out zero-shot top-1 is ≥ 5× chance in every language; the exported module
classifies with class names in each language wrapped in prompts no table or test elsewhere uses;
and Multi30K evaluates through ``--savedmodel`` as the NumPy reference computes it."""

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from align_tf.data import languages, synthetic

pytestmark = pytest.mark.slow
importlib.import_module("tensorflow_text")  # the exported tokenizer's ops (as for hub.load)

CHANCE = 1 / len(synthetic.CLASSES)
# Prompts around the class name (``{}``) that neither the corpus nor the evaluation uses.
UNSEEN = {"en": "an illustration: {}", "de": "Abbildung: {}", "fr": "illustration : {}",
          "cs": "ilustrace: {}", "es": "ilustración: {}", "ru": "иллюстрация: {}",
          "zh": "插图：{}", "ja": "イラスト：{}", "ar": "رسم توضيحي: {}", "hi": "चित्रण: {}"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A fresh mling_tiny run; ``ALIGN_MLING_RUN=DIR`` checks an existing run directory instead
    (e.g. one of several seeds) without training again."""
    if os.environ.get("ALIGN_MLING_RUN"):
        return os.environ["ALIGN_MLING_RUN"]
    model_dir = str(tmp_path_factory.mktemp("mling") / "run")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-m", "align_tf.train", "--config=mling_tiny",
                           f"--model_dir={model_dir}"], cwd=root, capture_output=True,
                          text=True, timeout=1800,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return model_dir


def test_held_out_pairs_in_every_language(run):
    with open(os.path.join(run, "eval.json")) as f:
        results = json.load(f)["results"]["synthetic"]
    for code in languages.LANGUAGES:
        assert results["zeroshot"][code]["heldout_top1"] >= 5 * CHANCE, code
        assert results["zeroshot"][code]["seen_top1"] > results["zeroshot"][code]["heldout_top1"] - 0.5
        assert 0 <= results["retrieval"][code]["i2t_R@1"] <= 1
    assert set(results["zeroshot"]["mean"]) >= {"heldout_top1", "seen_top1", "top1", "top5"}
    assert results["crosslingual"]["de_zh"]["t2t_R@1"] > CHANCE
    assert len([v for v in results["crosslingual"].values() if isinstance(v, dict)]) == 10 * 9 + 1


def test_exported_module_classifies_with_unseen_prompts_in_every_language(run):
    module = tf.saved_model.load(os.path.join(run, "savedmodel"))
    classify = module.signatures["zero_shot_classify"]
    rng = np.random.default_rng(4242)  # images no evaluation drew
    pairs = [p for p in synthetic.HELD_OUT for _ in range(20)]
    images = np.stack([synthetic.render(p, 48, rng)[0] for p in pairs]).astype(np.float32) / 255
    labels = np.asarray([synthetic.CLASSES.index(p) for p in pairs])
    for code, template in UNSEEN.items():
        names = [template.format(languages.phrase(code, p)) for p in synthetic.CLASSES]
        probs = classify(images=tf.constant(images), class_names=tf.constant(names))
        accuracy = np.mean(np.argmax(probs["probabilities"].numpy(), axis=1) == labels)
        assert accuracy >= 5 * CHANCE, (code, accuracy)


def _multi30k_fixture(root) -> tuple:
    """Multi30K's public layout (test_multi30k._write) holding 12 synthetic images, one class
    each, captioned in en/de (5 each, task 2) and fr/cs (1 each, task 1) by the corpus' tables."""
    sys.path.insert(0, os.path.dirname(__file__))
    from test_multi30k import _write

    from align_tf.data.languages import corpus
    rng = np.random.default_rng(7)
    pairs = synthetic.CLASSES[::3][:10] + synthetic.CLASSES[1:3]
    names = [f"{1000 + i}.jpg" for i in range(len(pairs))]
    os.makedirs(root / "flickr30k-images")
    backgrounds = []
    for name, pair in zip(names, pairs):
        image, _, bg = synthetic.render(pair, 48, rng)
        Image.fromarray(image).save(root / "flickr30k-images" / name, format="PNG")
        backgrounds.append(bg)
    captions = {lang: [[corpus.caption(lang, p, bg, rng, noise=0.0, partial=0.0)
                        for p, bg in zip(pairs, backgrounds)] for _ in range(per)]
                for lang, per in (("en", 5), ("de", 5), ("fr", 1), ("cs", 1))}
    _write(str(root / "data/task2/image_splits/test_2016_images.txt"), names)
    _write(str(root / "data/task1/image_splits/test_2016_flickr.txt"), names, gz=True)
    for lang in ("en", "de"):
        for k in range(5):
            _write(str(root / f"data/task2/raw/test_2016.{k + 1}.{lang}"), captions[lang][k],
                   gz=k == 2)
    for lang in ("fr", "cs"):
        _write(str(root / f"data/task1/raw/test_2016_flickr.{lang}"), captions[lang][0])
    return names, captions


def test_multi30k_through_the_savedmodel(run, tmp_path):
    from align_tf.evaluate import evaluate

    names, captions = _multi30k_fixture(tmp_path)
    savedmodel = os.path.join(run, "savedmodel")
    metrics = evaluate(savedmodel=savedmodel, datasets=f"multi30k:{tmp_path}")[
        "results"]["multi30k"]["retrieval"]
    module = tf.saved_model.load(savedmodel)
    pixels = np.stack([np.asarray(Image.open(tmp_path / "flickr30k-images" / n).convert("RGB"))
                       for n in names]).astype(np.float32) / 255
    images = module.signatures["image_embed"](images=tf.constant(pixels))["embeddings"].numpy()
    for lang, rows in captions.items():
        texts = [rows[k][i] for i in range(len(names)) for k in range(len(rows))]
        text = module.signatures["text_embed"](texts=tf.constant(texts))["embeddings"].numpy()
        sims, owner = images @ text.T, np.repeat(np.arange(len(names)), len(rows))
        expected = {}
        for k in (1, 5, 10):
            expected[f"i2t_R@{k}"] = np.mean([np.sum(sims[i] > sims[i, owner == i].max()) < k
                                              for i in range(len(names))])
            expected[f"t2i_R@{k}"] = np.mean([np.sum(sims[:, j] > sims[owner[j], j]) < k
                                              for j in range(len(texts))])
        for key, value in expected.items():
            assert metrics[f"{lang}_{key}"] == pytest.approx(value, abs=1e-6), (lang, key)
        assert metrics[f"{lang}_mR"] == pytest.approx(np.mean(list(expected.values())))
