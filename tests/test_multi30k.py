"""``multi30k:DIR``: the public layout (plain and gzipped files), the evaluator's per-language
recalls and mR against an independent NumPy computation, and one-line errors."""

import gzip
import os
import zlib

import numpy as np
import pytest
from PIL import Image

from align_tf.configs import base
from align_tf.data import sources
from align_tf.evaluation import runner
from align_tf.evaluation.embed import Encoder

NUM_IMAGES = 12
LANGS = {"en": 5, "de": 5, "fr": 1, "cs": 1}
TABLE = np.random.default_rng(0).normal(size=(NUM_IMAGES, 6))  # each image's "true" embedding


def _colour(i):
    return (20 * i + 5, 250 - 20 * i, (53 * i) % 256)


def _text_vector(text):
    """A caption's embedding: its image's vector plus text-specific noise (some captions miss)."""
    image = int(text.split("img")[1].split()[0])
    noise = np.random.default_rng(zlib.crc32(text.encode())).normal(size=6)
    v = TABLE[image] + 1.1 * noise
    return v / np.linalg.norm(v)


class IndexEncoder(Encoder):
    """Reads the image index back from its solid colour; texts as ``_text_vector``."""

    image_size, resize_size, batch_size = 8, None, 5

    def embed_image_batch(self, pixels):
        red = np.asarray(pixels, np.float64)[:, :, :, 0].mean(axis=(1, 2)) * 255
        v = TABLE[np.round((red - 5) / 20).astype(int)]
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def embed_text_batch(self, texts):
        return np.stack([_text_vector(t.decode()) for t in texts.numpy()])


def _write(path, lines, gz=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = ("\n".join(lines) + "\n").encode()
    with open(path + (".gz" if gz else ""), "wb") as f:
        f.write(gzip.compress(data) if gz else data)


def _fixture(root):
    """Multi30K's exact public layout: task2 raw test_2016.{1..5}.{en,de} and task1 raw
    test_2016_flickr.{fr,cs}, both image lists, some files gzipped as the repository ships them."""
    names = [f"{1000 + 7 * i}.jpg" for i in range(NUM_IMAGES)]
    os.makedirs(root / "flickr30k-images")
    for i, name in enumerate(names):
        Image.new("RGB", (8, 8), _colour(i)).save(root / "flickr30k-images" / name, format="PNG")
    _write(str(root / "data/task2/image_splits/test_2016_images.txt"), names)
    _write(str(root / "data/task1/image_splits/test_2016_flickr.txt"), names, gz=True)
    for k in range(1, 6):
        for lang in ("en", "de"):
            _write(str(root / f"data/task2/raw/test_2016.{k}.{lang}"),
                   [f"{lang} Bild img{i} nummer {k} ü" for i in range(NUM_IMAGES)], gz=k == 3)
    for lang in ("fr", "cs"):
        _write(str(root / f"data/task1/raw/test_2016_flickr.{lang}"),
               [f"{lang} image img{i} čé" for i in range(NUM_IMAGES)], gz=lang == "cs")
    return names


def _numpy_reference(lang, per_image):
    """Recall@1/5/10 both ways and mR, from scratch: image i's captions are its ``per_image``."""
    texts = [f"{lang} Bild img{i} nummer {k} ü" if lang in ("en", "de") else
             f"{lang} image img{i} čé" for i in range(NUM_IMAGES) for k in range(1, per_image + 1)]
    owner = np.repeat(np.arange(NUM_IMAGES), per_image)
    images = TABLE / np.linalg.norm(TABLE, axis=1, keepdims=True)
    sims = images @ np.stack([_text_vector(t) for t in texts]).T
    out = {}
    for k in (1, 5, 10):
        i2t = [np.sum(sims[i] > sims[i, owner == i].max()) < k for i in range(NUM_IMAGES)]
        t2i = [np.sum(sims[:, j] > sims[owner[j], j]) < k for j in range(len(texts))]
        out[f"{lang}_i2t_R@{k}"], out[f"{lang}_t2i_R@{k}"] = np.mean(i2t), np.mean(t2i)
    out[f"{lang}_mR"] = np.mean(list(out.values()))
    return out


def test_every_metric_matches_numpy_on_the_public_layout(tmp_path):
    _fixture(tmp_path)
    plans = runner.plans_from_config(base.get_config(), datasets=f"multi30k:{tmp_path}")
    results = runner.run_plans(IndexEncoder(), plans)
    metrics = results["multi30k"]["retrieval"]
    assert metrics["num_images"] == NUM_IMAGES and metrics["num_captions"] == 12 * NUM_IMAGES
    for lang, per_image in LANGS.items():
        expected = _numpy_reference(lang, per_image)
        for key, value in expected.items():
            assert metrics[key] == pytest.approx(value, abs=1e-9), key
        assert 0 < expected[f"{lang}_mR"] < 1  # neither trivial nor hopeless
    assert len([k for k in metrics if k.endswith("_mR")]) == 4


def test_layout_errors_are_one_line(tmp_path):
    names = _fixture(tmp_path)
    source = sources.get(f"multi30k:{tmp_path}")
    os.remove(tmp_path / "data/task1/raw/test_2016_flickr.fr")
    with pytest.raises(FileNotFoundError, match=r"test_2016_flickr\.fr \(or \.gz\) does not exist"):
        source.retrieval(None)
    _write(str(tmp_path / "data/task1/raw/test_2016_flickr.fr"), ["only one"])
    with pytest.raises(ValueError, match=r"test_2016_flickr\.fr has 1 captions for the 12"):
        source.retrieval(None)
    _write(str(tmp_path / "data/task1/raw/test_2016_flickr.fr"), ["x img0"] * NUM_IMAGES)
    os.remove(tmp_path / "flickr30k-images" / names[4])
    with pytest.raises(FileNotFoundError, match=f"image .*{names[4]} does not exist"):
        source.retrieval(None)


def test_the_evaluator_needs_the_kind_the_source_yields():
    """evaluation/multi30k.py spells the kind itself (importing the source would load TensorFlow
    into ``align-evaluate --help``); the two spellings must agree."""
    from align_tf.data.sources import multi30k as source
    from align_tf.evaluation import multi30k as evaluator
    classes = [c for c in vars(evaluator).values() if getattr(c, "needs", None)]
    assert classes and all(c.needs == source.MULTI30K for c in classes)
