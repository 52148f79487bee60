"""[mling] Per-language evaluation (align_tf/evaluation/multilingual.py) through the runner, as
training and align-evaluate run it, against an independent NumPy computation."""

import numpy as np
import pytest

from align_tf import prompts
from align_tf.configs import base, mling_tiny
from align_tf.data import synthetic
from align_tf.data.sources import synthetic as source
from align_tf.evaluation import embed, runner

LANGS = ("de", "zh", "ar")


class CharBagEncoder(embed.Encoder):
    """Deterministic embeddings with no model: images by a fixed random projection of the
    pixels, texts as the sum of a fixed random vector per character (every script alike)."""

    image_size, batch_size, dim = 16, 64, 24

    def __init__(self):
        self.projection = np.random.default_rng(0).normal(size=(16 * 16 * 3, self.dim))

    def embed_image_batch(self, pixels):
        x = np.asarray(pixels).reshape(len(pixels), -1) @ self.projection
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def embed_text_batch(self, texts):
        out = [sum(np.random.default_rng(ord(ch)).normal(size=self.dim) for ch in t.decode())
               for t in texts.numpy()]
        out = np.asarray(out)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _config(languages):
    """The default config with mling_tiny's evaluators over ``languages``."""
    config = base.get_config()
    config.eval.evaluators = mling_tiny.evaluators(languages)
    return config


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def report():
    config = _config(",".join(LANGS))
    config.eval.synthetic_examples_per_class = 3
    config.eval.synthetic_retrieval_rounds = 2
    for entry in config.eval.evaluators.values():
        entry.captions_per_image = 2
    encoder = CharBagEncoder()
    results = runner.run_plans(encoder, runner.plans_from_config(config))
    return runner.make_report(results, {}, 0.0)["results"]["synthetic"], encoder, config


def test_zero_shot_per_language_matches_numpy(report):
    results, encoder, config = report
    arrays = source.synthetic_arrays(config.eval.synthetic_seed, 3, encoder.image_size)
    images = encoder.embed_images(arrays["image"])
    labels = arrays["label"]
    heldout = np.isin(labels, [synthetic.CLASSES.index(p) for p in synthetic.HELD_OUT])
    for code in LANGS:
        texts = [prompts.multilingual_prompts(code, pair) for pair in synthetic.CLASSES]
        emb = _unit(encoder.embed_texts([t for group in texts for t in group]))
        classes = _unit(emb.reshape(30, 4, -1).mean(axis=1))
        hit = np.argmax(images @ classes.T, axis=1) == labels
        got = results["zeroshot"][code]
        assert got["top1"] == pytest.approx(hit.mean())
        assert got["heldout_top1"] == pytest.approx(hit[heldout].mean())
        assert got["seen_top1"] == pytest.approx(hit[~heldout].mean())
    for metric in ("top1", "top5", "heldout_top1", "seen_top1"):
        assert results["zeroshot"]["mean"][metric] == pytest.approx(
            np.mean([results["zeroshot"][c][metric] for c in LANGS]))


def test_retrieval_and_crosslingual_match_numpy(report):
    results, encoder, config = report
    arrays = source.multilingual_retrieval(2, 2, config.eval.synthetic_seed + 2,
                                           encoder.image_size, LANGS)
    images = encoder.embed_images(arrays["image"])
    gallery = arrays["gallery"]
    texts = {c: encoder.embed_texts(list(arrays["captions"][c].reshape(-1))) for c in LANGS}
    owner = np.repeat(np.arange(len(images)), 2)
    for code in LANGS:
        # text → image: the caption's own image is the best of its gallery
        hits = [np.argmax(np.where(gallery == gallery[owner[t]], images @ texts[code][t], -9))
                == owner[t] for t in range(len(owner))]
        assert results["retrieval"][code]["t2i_R@1"] == pytest.approx(np.mean(hits))
        # image → text: the best caption of the gallery is one of the image's own
        hits = [owner[np.argmax(np.where(gallery[owner] == gallery[i], texts[code] @ images[i],
                                         -9))] == i for i in range(len(images))]
        assert results["retrieval"][code]["i2t_R@1"] == pytest.approx(np.mean(hits))
    for a, b in (("de", "zh"), ("ar", "de")):
        first_own = []  # rank of the query image's first caption in b, within its gallery
        for t in range(len(owner)):
            scores = np.where(gallery[owner] == gallery[owner[t]], texts[b] @ texts[a][t], -9)
            order = np.argsort(-scores, kind="stable")
            first_own.append(next(k for k, j in enumerate(order) if owner[j] == owner[t]))
        for k in (1, 5):
            assert results["crosslingual"][f"{a}_{b}"][f"t2t_R@{k}"] == pytest.approx(
                np.mean(np.asarray(first_own) < k))
    pairs = [k for k, v in results["crosslingual"].items() if isinstance(v, dict) and k != "mean"]
    assert len(pairs) == len(LANGS) * 2
    assert results["retrieval"]["mean"]["i2t_R@5"] == pytest.approx(
        np.mean([results["retrieval"][c]["i2t_R@5"] for c in LANGS]))


def test_bad_languages_field_is_one_line():
    config = _config("de,xx")
    with pytest.raises(ValueError, match=r"^eval\.evaluators\.mling_\w+\.languages='de,xx': unknown language 'xx'"):
        runner.plans_from_config(config)
