"""Tests of align_tf.evaluation and align_tf.prompts: prompts, retrieval, zero-shot, kNN, linear
probe, the config-declared evaluators (runner), the encoders and the CLI.

Metric tests use hand-built embeddings whose answers are worked out in the comments. Data-source
tests use data made here (``tfds.testing.mock_data`` with our own examples, TFRecords written to
``tmp_path``) and a ``FakeEncoder`` whose embeddings encode what the images and texts show, so a
wrong label order, a dropped caption or a mis-grouped image changes the numbers. The model tests
use a randomly initialised nano model saved as a run directory and a SavedModel; one test trains a
few steps with the trainer and checks the CLI reproduces its eval.json exactly.
"""

import io
import json
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from align_tf import export, prompts
from align_tf.configs import base
from align_tf.data import synthetic, tfrecord
from align_tf.evaluation import knn, linear_probe, retrieval, runner, zero_shot
from align_tf.evaluation.embed import Encoder, KerasEncoder, encoder_for_model, load_encoder


# ----------------------------------------------------------------------------------- prompts


def test_clip_templates_are_80_distinct_with_one_slot():
    templates = prompts.CLIP_IMAGENET_TEMPLATES
    assert len(templates) == 80
    assert len(set(templates)) == 80
    assert all(isinstance(t, str) and t.count("{}") == 1 for t in templates)
    assert set(prompts.CLIP_IMAGENET_TEMPLATES_7) <= set(templates)
    assert prompts.get_templates("clip80") == templates
    assert prompts.get_templates("none") == ("{}",)
    assert prompts.get_templates("simple") == ("a photo of a {}.",)
    assert prompts.get_templates("auto", "cifar10") == templates
    assert prompts.get_templates("auto", "synthetic") == prompts.get_templates("synthetic") \
        == synthetic.PROMPTS
    with pytest.raises(ValueError, match="unknown templates 'clip81'"):
        prompts.get_templates("clip81")


def test_templates_have_one_owner():
    # export takes its choices and lookup from align_tf.prompts, and imports no evaluation code.
    assert export.TEMPLATE_CHOICES is prompts.TEMPLATE_CHOICES
    assert export.get_templates is prompts.get_templates
    source = open(export.__file__).read()
    assert "align_tf.evaluation" not in source and "TEMPLATE_SETS" not in source
    assert prompts.check_templates(["a {}.", "{} art"]) == ("a {}.", "{} art")
    for bad in ([], ["no slot"], ["{} and {}"], "a {}.", [3]):
        with pytest.raises(ValueError, match="templates must be"):
            prompts.check_templates(bad)
    with pytest.raises(ValueError, match="templates must be"):  # zero-shot validates the same way
        zero_shot.class_embeddings(lambda t: np.ones((len(t), 2)), ["cat"], ["no slot"])


def test_class_name_lists():
    assert len(prompts.CIFAR10_CLASSNAMES) == 10
    assert len(set(prompts.CIFAR100_CLASSNAMES)) == 100
    names = prompts.IMAGENET_CLASSNAMES
    assert len(names) == 1000
    # Spot checks of the TFDS/synset label order.
    assert (names[0], names[1], names[207], names[281], names[948], names[999]) == (
        "tench", "goldfish", "Golden Retriever", "tabby cat", "Granny Smith apple", "toilet paper")
    assert prompts.get_classnames("cifar10:3.0.2") == prompts.CIFAR10_CLASSNAMES


# ----------------------------------------------------------------------------------- retrieval


def _reference_ranks(sim, own_mask):
    """Unblocked reference: position of the first own candidate in a stable descending sort."""
    order = np.argsort(-sim, axis=1, kind="stable")
    return np.array([np.flatnonzero(own_mask[i][order[i]])[0] for i in range(len(sim))])


def test_identity_gives_perfect_recall():
    emb = tf.math.l2_normalize(tf.random.stateless_normal((50, 16), seed=(1, 2)), -1).numpy()
    out = retrieval.recall_at_k(emb, emb, block_size=7)
    assert out["i2t_R@1"] == out["t2i_R@1"] == 1.0
    assert out["i2t_mean_rank"] == out["t2i_mean_rank"] == 1.0


def test_permutation_gives_known_recall():
    # One-hot embeddings; captions 0 and 1 swapped (text j shows image perm[j]).
    perm = [1, 0, 2, 3]
    images, texts = np.eye(4), np.eye(4)[perm]
    out = retrieval.recall_at_k(images, texts, ks=(1, 2))
    # Image 0: text 1 scores 1, its own text 0 scores 0 and is the first of the zeros → rank 1.
    # Image 1: text 0 scores 1; own text 1 next → rank 1. Images 2, 3: rank 0. Same for t2i.
    assert out == {"i2t_R@1": 0.5, "i2t_R@2": 1.0, "i2t_mean_rank": 1.5, "i2t_median_rank": 1.5,
                   "t2i_R@1": 0.5, "t2i_R@2": 1.0, "t2i_mean_rank": 1.5, "t2i_median_rank": 1.5}


def test_ties_are_broken_by_index():
    # All embeddings equal: every score ties, so caption t's image ranks t-th (t lower indices).
    emb = np.ones((10, 4)) / 2
    out = retrieval.recall_at_k(emb, emb, ks=(1, 5, 10), block_size=3)
    assert out["t2i_R@1"] == 0.1 and out["t2i_R@5"] == 0.5 and out["t2i_R@10"] == 1.0
    assert out["i2t_R@1"] == 0.1 and out["i2t_mean_rank"] == 5.5
    np.testing.assert_array_equal(retrieval.text_to_image_ranks(emb, emb, np.arange(10)),
                                  np.arange(10))


def test_multi_caption_protocol_by_hand():
    e0, e1, e2 = np.eye(3)
    images = np.stack([e0, e1, e2])
    texts = np.stack([0.6 * e0 + 0.8 * e1, e0,      # image 0: a poor caption, then a perfect one
                      e2, 0.8 * e1 + 0.6 * e2,      # image 1: a wrong caption, then a fair one
                      e1, 0.6 * e2 + 0.8 * e0])     # image 2: a wrong caption, then a poor one
    text_to_image = [0, 0, 1, 1, 2, 2]
    # i2t: image 0 row [.6, 1, 0, 0, 0, .8] → its text 1 first: rank 0 (one good caption suffices).
    #      image 1 row [.8, 0, 0, .8, 1, 0] → text 3 behind text 4 and the tied, lower text 0: 2.
    #      image 2 row [0, 0, 1, .6, 0, .6] → text 5 behind text 2 and the tied text 3: 2.
    np.testing.assert_array_equal(
        retrieval.image_to_text_ranks(images, texts, text_to_image, block_size=2), [0, 2, 2])
    # t2i: text 0 [.6,.8,0]→1; 1→0; text 2 [0,0,1]: image 1 ties image 0 at 0, behind both → 2;
    #      3→0; text 4 [0,1,0]: image 2 behind image 1 and tied image 0 → 2; text 5 [.8,0,.6]→1.
    np.testing.assert_array_equal(
        retrieval.text_to_image_ranks(images, texts, text_to_image, block_size=4), [1, 0, 2, 0, 2, 1])
    out = retrieval.recall_at_k(images, texts, text_to_image, ks=(1, 2, 3))
    assert out["i2t_R@1"] == pytest.approx(1 / 3) and out["i2t_R@3"] == 1.0
    assert out["i2t_mean_rank"] == pytest.approx(7 / 3)
    assert out["t2i_R@1"] == pytest.approx(2 / 6) and out["t2i_R@2"] == pytest.approx(4 / 6)
    assert out["t2i_mean_rank"] == pytest.approx(2.0) and out["t2i_median_rank"] == 2.0
    with pytest.raises(ValueError, match="at least one caption"):
        retrieval.recall_at_k(images, texts[:2], [0, 0])


@pytest.mark.parametrize("block_size", [1, 5, 64, 10_000])
def test_blocked_equals_unblocked_reference(block_size):
    rng = np.random.default_rng(0)
    # Coarse values make many exact ties, so the tie rule is exercised as well.
    images = rng.integers(-2, 3, (40, 6)).astype(np.float32)
    text_to_image = np.repeat(np.arange(40), 5)  # the 5-captions protocol
    texts = (images[text_to_image] + rng.integers(-2, 3, (200, 6))).astype(np.float32)
    sim = images @ texts.T
    i2t = _reference_ranks(sim, text_to_image[None, :] == np.arange(40)[:, None])
    t2i = _reference_ranks(sim.T, np.arange(40)[None, :] == text_to_image[:, None])
    np.testing.assert_array_equal(
        retrieval.image_to_text_ranks(images, texts, text_to_image, block_size), i2t)
    np.testing.assert_array_equal(
        retrieval.text_to_image_ranks(images, texts, text_to_image, block_size), t2i)
    assert 0 < np.mean(i2t == 0) < 1 and 0 < np.mean(t2i == 0) < 1  # a non-trivial case


@pytest.mark.parametrize("galleries", [None, np.arange(60) % 3])
def test_faiss_matches_exact_recall(galleries):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(1)
    images = rng.normal(size=(60, 8)).astype(np.float32)
    text_to_image = np.repeat(np.arange(60), 5)
    texts = images[text_to_image] + 1.5 * rng.normal(size=(300, 8)).astype(np.float32)
    exact = retrieval.recall_at_k(images, texts, text_to_image, galleries=galleries)
    fast = retrieval.recall_at_k_faiss(images, texts, text_to_image, galleries=galleries)
    assert fast == {k: v for k, v in exact.items() if "@" in k}
    assert 0 < exact["i2t_R@1"] < 1


def test_galleries_rank_within_their_own_images():
    # Two galleries holding the same two images; each caption equals its image's embedding.
    e0, e1 = np.eye(2)
    images = np.stack([e0, e1, e0, e1])
    texts = images.copy()
    # One pool: captions 2 and 3 tie with images 0 and 1, which have lower indices and win.
    pooled = retrieval.recall_at_k(images, texts, ks=(1,))
    assert pooled["t2i_R@1"] == 0.5 and pooled["i2t_R@1"] == 0.5
    # Galleries [0, 0, 1, 1]: every query ranks only its gallery's candidates.
    split = retrieval.recall_at_k(images, texts, ks=(1,), galleries=[0, 0, 1, 1])
    assert split["t2i_R@1"] == split["i2t_R@1"] == 1.0 and split["t2i_mean_rank"] == 1.0


# ----------------------------------------------------------------------------------- zero-shot


def test_prompt_ensemble_matches_numpy():
    rng = np.random.default_rng(2)
    table = {}

    def embed_text(texts):  # a fixed random, unnormalised vector per string
        return np.stack([table.setdefault(t, rng.normal(size=5) * rng.uniform(0.5, 3)) for t in texts])

    names, templates = ["cat", "dog", "red star"], ("a {}.", "a photo of a {}.", "{} art")
    got = zero_shot.class_embeddings(embed_text, names, templates)
    for c, name in enumerate(names):
        vecs = np.stack([table[t.format(name)] for t in templates])
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        mean = vecs.mean(0)
        np.testing.assert_allclose(got[c], mean / np.linalg.norm(mean), rtol=1e-5)
    # Chunked embedding (one class per call) gives the same thing.
    np.testing.assert_allclose(
        zero_shot.class_embeddings(embed_text, names, templates, max_texts_per_call=2), got)


def test_zero_shot_topk_by_hand():
    class_emb = np.eye(4)
    images = np.array([[1, 0.5, 0, 0],    # label 0: top-1 hit
                       [0.9, 0, 0.5, 0],  # label 2: second → top-2 hit only
                       [0, 0, 0, 1],      # label 3: hit
                       [0, 0, 0, 0]])     # label 1: all tied, lower classes first → rank 1
    out = zero_shot.topk_accuracy(images, class_emb, [0, 2, 3, 1], topk=(1, 2, 5), block_size=3)
    assert out == {"top1": 0.5, "top2": 1.0}  # top5 > 4 classes is not reported


# ----------------------------------------------------------------------------------- kNN / probe


def test_knn_weighting_by_hand():
    # Query e0; neighbours: two of class 0 at cosine 0.5, one of class 1 at cosine 0.99.
    train = np.array([[0.5, np.sqrt(0.75), 0], [0.5, -np.sqrt(0.75), 0],
                      [0.99, 0, np.sqrt(1 - 0.99 ** 2)], [-1, 0, 0]])
    labels = [0, 0, 1, 2]
    query = np.array([[1.0, 0, 0]])
    majority = knn.knn_scores(train, labels, query, k=3, temperature=None)
    np.testing.assert_array_equal(majority, [[2, 1, 0]])  # the far class-2 point is not a neighbour
    # exp(0.99/0.07) > 2 exp(0.5/0.07): the single close neighbour outvotes the two far ones.
    weighted = knn.knn_scores(train, labels, query, k=3, temperature=0.07)
    np.testing.assert_allclose(weighted[0, :2] / weighted[0, 1],
                               [2 * np.exp((0.5 - 0.99) / 0.07), 1], rtol=1e-4)
    assert knn.knn_accuracy(train, labels, query, [0], k=3, temperature=None)["top1"] == 1.0
    assert knn.knn_accuracy(train, labels, query, [0], k=3, temperature=0.07)["top1"] == 0.0


def _clusters(n_per_class, num_classes=4, dim=8, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:num_classes] * 3
    labels = np.repeat(np.arange(num_classes), n_per_class)
    return centres[labels] + spread * rng.normal(size=(len(labels), dim)), labels


def test_knn_on_separable_features():
    x, y = _clusters(30, num_classes=6)
    tx, ty = _clusters(10, num_classes=6, seed=1)
    assert knn.knn_accuracy(x, y, tx, ty, k=5, block_size=7) == {"top1": 1.0, "top5": 1.0}
    # Labels unrelated to the features: near chance (1/6), far from perfect.
    shuffled = np.random.default_rng(5).permutation(y)
    assert knn.knn_accuracy(x, shuffled, tx, ty, k=5)["top1"] < 0.5


@pytest.mark.parametrize("backend", ["sklearn", "keras"])
def test_linear_probe_on_separable_features(backend):
    if backend == "sklearn":
        pytest.importorskip("sklearn")
    # Linearly separable but not by nearest centroid alone: class = sign of feature 0 − feature 1.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 6))
    y = (x[:, 0] - x[:, 1] > 0).astype(int)
    x[:, 0] += np.where(y == 1, 0.5, -0.5)  # a margin
    out = linear_probe.linear_probe(x[:300], y[:300], x[300:], y[300:], backend=backend,
                                    epochs=20, learning_rate=0.1, topk=(1,))
    assert out["top1"] >= 0.97, out
    # Shuffled labels carry no signal: the probe must not "learn" them.
    shuffled = rng.permutation(y)
    out = linear_probe.linear_probe(x[:300], shuffled[:300], x[300:], shuffled[300:],
                                    backend=backend, epochs=20, learning_rate=0.1, topk=(1,))
    assert out["top1"] < 0.7, out


# ----------------------------------------------------------------------------------- data sources


class FakeEncoder(Encoder):
    """Embeddings that encode what the data shows.

    An image whose pixels all equal ``10 + 20 * i`` embeds as ``e_i``; a text embeds as ``e_i``
    if it contains the word ``item{i}`` or the class name ``classnames[i]`` (plus a
    text-dependent offset on the last axis, so prompt ensembling has something to average).
    """

    image_size, resize_size, batch_size, dim = 8, None, 4, 12

    def __init__(self, classnames=()):
        self.classnames = list(classnames)

    def embed_image_batch(self, pixels):
        ids = np.rint((np.asarray(pixels).mean(axis=(1, 2, 3)) * 255 - 10) / 20).astype(int)
        return np.eye(self.dim)[ids]

    def embed_text_batch(self, texts):
        out = []
        for text in (t.decode() for t in texts.numpy()):
            match = re.search(r"item(\d+)", text)
            if match:
                i = int(match.group(1))
            else:  # longest class name contained (so "cat" is not found in "caterpillar")
                i = max((n for n in self.classnames if n in text), key=len)
                i = self.classnames.index(i)
            vec = np.eye(self.dim)[i]
            vec[-1] = 0.1 * (len(text) % 5)
            out.append(vec / np.linalg.norm(vec))
        return np.stack(out)


def _plans(**overrides):
    return runner.plans_from_config(base.get_config(), **overrides)


def _image(i, size=16):
    return np.full((size, size, 3), 10 + 20 * i, np.uint8)


def _mock_tfds(make_examples):
    import tensorflow_datasets as tfds

    def as_dataset(self, split, *args, **kwargs):
        examples = make_examples(self.name, str(split))
        return tf.data.Dataset.from_generator(
            lambda: iter(examples),
            output_signature=tf.nest.map_structure(
                lambda v: tf.TensorSpec(np.shape(v), tf.as_dtype(np.asarray(v).dtype)
                                        if not isinstance(v, (str, bytes)) and
                                        np.asarray(v).dtype != object else tf.string),
                examples[0]))

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def test_tfds_classification_zeroshot_knn_linear():
    pytest.importorskip("sklearn")

    def examples(name, split):
        # Labels 0..9 (train: 3 each; test: labels 9..0, once), images encode their label.
        labels = list(range(10)) * 3 if "train" in split else list(range(9, -1, -1))
        return [{"image": _image(i), "label": np.int64(i)} for i in labels]

    encoder = FakeEncoder(prompts.CIFAR10_CLASSNAMES)
    with _mock_tfds(examples):
        plans = _plans(datasets="cifar10", tasks="zeroshot,knn,linear", templates="clip7", knn_k=3,
                       linear_c=1.0)
        results = runner.run_plans(encoder, plans)["cifar10"]
    assert results["zeroshot"]["top1"] == 1.0 and results["zeroshot"]["num_examples"] == 10
    assert results["zeroshot"]["num_templates"] == 7 and results["zeroshot"]["num_classes"] == 10
    assert results["knn"]["top1"] == 1.0 and results["knn"]["num_train"] == 30
    assert results["linear"]["top1"] == 1.0
    # With class names in the wrong order, zero-shot must fail: labels and names are paired.
    shifted = FakeEncoder(prompts.CIFAR10_CLASSNAMES[1:] + prompts.CIFAR10_CLASSNAMES[:1])
    with _mock_tfds(examples):
        plans = _plans(datasets="cifar10", tasks="zeroshot")
        assert runner.run_plans(shifted, plans)["cifar10"]["zeroshot"]["top1"] == 0.0


def test_tfds_captions_retrieval_keeps_five_captions():
    def examples(name, split):
        # 6 captions per image; the 6th names another image and must be dropped (5-caption rule).
        return [{"image": _image(i), "captions": {"text": np.array(
            [f"item{i} version {v}" for v in range(5)] + [f"item{(i + 1) % 4}"], object)}}
            for i in range(4)]

    with _mock_tfds(examples):
        plans = _plans(datasets="coco_captions")
        assert [t for t, _ in plans[0][1]] == ["retrieval"]  # auto: what a captioned set supports
        out = runner.run_plans(FakeEncoder(), plans)["coco_captions"]["retrieval"]
    assert out["num_images"] == 4 and out["num_captions"] == 20 and out["num_galleries"] == 1
    assert out["i2t_R@1"] == 1.0 and out["t2i_R@1"] == 1.0


def _png(array):
    return tf.io.encode_png(array).numpy()


def test_tfrecord_retrieval_groups_identical_images(tmp_path):
    # One caption per record; image 1's captions are not consecutive; one record holds two.
    records = [(0, ["item0 a"]), (1, ["item1 a"]), (0, ["item0 b"]), (2, ["item2 a", "item2 b"]),
               (1, ["item1 b"]), (1, ["item1 c"])]
    with tf.io.TFRecordWriter(str(tmp_path / "eval-00000.tfrecord")) as writer:
        for i, captions in records:
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                "image/encoded": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[_png(_image(i))])),
                "caption": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[c.encode() for c in captions])),
            })).SerializeToString())
    name = f"tfrecord:{tmp_path}/eval-*.tfrecord"
    plans = _plans(datasets=name, tasks="retrieval")
    assert plans.sources == {"tfrecord": name}  # the key is the source's name; the spec beside
    out = runner.run_plans(FakeEncoder(), plans)["tfrecord"]
    assert out["retrieval"]["num_images"] == 3 and out["retrieval"]["num_captions"] == 7
    assert out["retrieval"]["i2t_R@1"] == 1.0 and out["retrieval"]["t2i_R@1"] == 1.0


def test_tfrecord_retrieval_skips_and_counts_corrupt_images(tmp_path):
    """A corrupt image (and a record that is no Example) is skipped and counted, as training
    does, instead of failing the evaluation; the report carries the counts."""
    png = _png(_image(3))
    pairs = [(_png(_image(0)), "item0 a"), (png[:len(png) // 2], "item3 cut short"),
             (_png(_image(1)), "item1 a"), b"not an Example", (_png(_image(2)), "item2 a")]
    tfrecord.write_pairs(pairs, str(tmp_path / "eval"))
    # A second shard cut inside its last record: read up to the damage (logged, not counted).
    cut, = tfrecord.write_pairs([(_png(_image(4)), "item4 a"), (_png(_image(5)), "item5 a")],
                                str(tmp_path / "eval-cut"))
    with open(cut, "r+b") as f:
        f.truncate(os.path.getsize(cut) - 10)
    name = f"tfrecord:{tmp_path}/eval-*.tfrecord"
    plans = _plans(datasets=name, tasks="retrieval")
    for _ in range(2):  # counts are per evaluation, not cumulative
        results = runner.run_plans(FakeEncoder(), plans)
        out = results["tfrecord"]["retrieval"]
        assert out["num_skipped_images"] == 1 and out["num_skipped_records"] == 1
        assert out["num_images"] == 4 and out["i2t_R@1"] == 1.0 and out["t2i_R@1"] == 1.0
    report = runner.make_report(results, {}, 0.0)
    assert report["sources"] == {"tfrecord": name}
    assert report["results"]["tfrecord"]["retrieval"]["num_skipped_images"] == 1.0
    assert not any("skipped" in k for k in runner.flatten(results))  # counts: not TensorBoard


# ----------------------------------------------------------------------------------- config


def test_synthetic_protocol_from_the_config():
    config = base.get_config()
    (name, evaluators), = runner.plans_from_config(config)  # the defaults, all on synthetic
    assert name == "synthetic" and [t for t, _ in evaluators] == [
        "retrieval", "intramodal", "correlation", "zeroshot"]
    ret, zs = dict(evaluators)["retrieval"], dict(evaluators)["zeroshot"]
    assert zs.templates == synthetic.PROMPTS and zs.topk == (1, 5)
    assert zs.data.classnames == tuple(synthetic.class_name(p) for p in synthetic.CLASSES)
    assert [zs.data.classnames[i] for i in zs.groups["heldout"]] == [
        synthetic.class_name(p) for p in synthetic.HELD_OUT]
    assert len(zs.groups["heldout"]) + len(zs.groups["seen"]) == len(synthetic.CLASSES) == 30
    assert ret.ks == (1, 5, 10) and ret.data.captions_per_image == 5

    class Size8(Encoder):
        image_size = 8

    # Rendering is seeded by eval.synthetic_seed: the same images every time, others per seed.
    def pixels(plans, task):
        data = dict(plans[0][1])[task].data
        return np.stack([ex["image"] for ex in data.make_dataset(Size8()).as_numpy_iterator()])

    small = dict(synthetic_examples_per_class=2, synthetic_retrieval_rounds=3)
    first, again = _plans(**small), _plans(**small)
    np.testing.assert_array_equal(pixels(first, "zeroshot"), pixels(again, "zeroshot"))
    np.testing.assert_array_equal(pixels(first, "retrieval"), pixels(again, "retrieval"))
    assert pixels(first, "zeroshot").shape == (60, 8, 8, 3)
    assert pixels(first, "retrieval").shape == (90, 8, 8, 3)
    other = _plans(synthetic_seed=7, **small)
    assert not np.array_equal(pixels(first, "zeroshot"), pixels(other, "zeroshot"))
    assert config.eval.synthetic_examples_per_class == 40  # overrides never touch the config


@pytest.mark.parametrize("overrides, error", [
    ({"tasks": "zeroshot,zero_shot"},
     r"eval\.evaluators\.synthetic_zero_shot\.type: unknown evaluator type 'zero_shot'"),
    ({"datasets": " , "}, r"eval\.datasets is empty"),
    ({"templates": "clip81"},
     r"eval\.evaluators\.synthetic_zeroshot\.templates: unknown templates 'clip81'"),
    ({"synthetic_examples_per_class": 0}, r"eval\.synthetic_examples_per_class must be an integer"),
    ({"synthetic_retrieval_rounds": 1.5}, r"eval\.synthetic_retrieval_rounds must be an integer"),
    ({"every_steps": -1}, r"eval\.every_steps must be an integer >= 0"),
    ({"max_examples": 0}, r"eval\.max_examples must be an integer >= 1 or None"),
    ({"recall_ks": "1,x"}, r"eval\.evaluators\.synthetic_retrieval\.recall_ks must be positive"),
    ({"tasks": "linear", "linear_backend": "torch"},
     r"eval\.evaluators\.synthetic_linear\.linear_backend must be one of"),
    ({"tasks": "knn", "knn_temperature": -1.0},
     r"eval\.evaluators\.synthetic_knn\.knn_temperature must be >= 0"),
    ({"captions_per_image": 0}, r"captions_per_image must be >= 1 with the synthetic"),
    ({"num_examples_per_class": 40}, r"unknown eval field\(s\) \['num_examples_per_class'\]"),
    ({"datasets": "no_such:set"}, r"eval\.evaluators\.no_such_auto\.dataset: .*'no_such"),
    ({"datasets": "tfds:cifar10", "tasks": "retrieval"},
     r"eval\.evaluators\.cifar10_retrieval: 'retrieval' needs a retrieval"),
])
def test_config_errors_name_the_field(overrides, error):
    with pytest.raises(ValueError, match=error) as info:
        _plans(**overrides)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("evaluators, error", [
    ({"x": {"dataset": "synthetic"}}, r"eval\.evaluators\.x needs a type"),
    ({"x": {"type": "knn"}}, r"eval\.evaluators\.x\.dataset is required"),
    ({"x": {"type": "knn", "dataset": "synthetic", "knn": 3}},
     r"eval\.evaluators\.x\.knn: not a field of evaluator type 'knn'"),
    ({}, r"eval\.evaluators is empty"),
])
def test_evaluator_entry_errors_name_the_entry(evaluators, error):
    config = base.get_config()
    config.eval.evaluators = evaluators
    with pytest.raises(ValueError, match=error) as info:
        runner.plans_from_config(config)
    assert "\n" not in str(info.value)


def test_entries_are_named_and_share_a_sources_data():
    """Two entries on one source share its data objects (embedded once) and report under one
    key; an entry may override a source option; two specs of one kind get suffixed keys."""
    config = base.get_config()
    config.eval.evaluators = {
        "zs": {"type": "zeroshot", "dataset": "synthetic"},
        "knn": {"type": "knn", "dataset": "synthetic", "knn_k": 3},
        "zs_small": {"type": "zeroshot", "dataset": "synthetic", "synthetic_examples_per_class": 1},
    }
    (key, evaluators), = runner.plans_from_config(config)
    # In name order (a ConfigDict's); the second zero-shot entry reports under its own name.
    assert key == "synthetic" and [t for t, _ in evaluators] == ["knn", "zeroshot", "zs_small"]
    knn_eval, zs, small = (e for _, e in evaluators)
    assert knn_eval.test_data is zs.data and knn_eval.k == 3 and small.data is not zs.data
    config.eval.evaluators = runner.evaluators_for("tfrecord:/a/*,tfrecord:/b/*", "retrieval")
    assert list(config.eval.evaluators) == ["tfrecord_retrieval", "tfrecord_retrieval_2"]


def test_old_flat_eval_fields_migrate_to_entries():
    from align_tf import migrate
    old = {"eval": {"datasets": "synthetic,cifar10", "tasks": "zeroshot,knn", "knn_k": 7,
                    "templates": "clip7", "batch_size": 8}}
    new = migrate.eval_section(old)
    assert new["eval"] == {"batch_size": 8, "evaluators": {
        "synthetic_zeroshot": {"type": "zeroshot", "dataset": "synthetic", "templates": "clip7"},
        "synthetic_knn": {"type": "knn", "dataset": "synthetic", "knn_k": 7},
        "cifar10_zeroshot": {"type": "zeroshot", "dataset": "cifar10", "templates": "clip7"},
        "cifar10_knn": {"type": "knn", "dataset": "cifar10", "knn_k": 7}}}
    assert new["finetune"] == {"templates": "clip7"}  # the zero-shot head's prompts were these
    rest, overrides = migrate.eval_flags(["--config.eval.knn_k=5", "--config.train.steps=2",
                                          "--config.eval.tasks=knn"])
    assert rest == ["--config.train.steps=2"] and overrides == {"knn_k": 5, "tasks": "knn"}
    config = runner.with_eval_overrides(base.get_config(), **overrides)
    assert dict(config.eval.evaluators["synthetic_knn"]) == {
        "type": "knn", "dataset": "synthetic", "knn_k": 5}


def test_every_eval_field_read_is_declared():
    import ml_collections
    fields = set(base.get_config().eval.keys())
    root = os.path.dirname(runner.__file__)
    sources = [os.path.join(root, f) for f in os.listdir(root) if f.endswith(".py")]
    sources += [os.path.join(root, "..", f) for f in ("evaluate.py", "trainer.py", "train.py")]
    read = set()
    for path in sources:
        text = open(path).read()
        assert not re.search(r"\.eval\.get\(|get\(\"eval\"", text), path  # read fields directly
        read |= set(re.findall(r"\b(?:config\.eval|ev|_EVAL)\.([a-z_]+)\b", text))
    read -= set(dir(ml_collections.ConfigDict))  # methods (keys, ignore_type, ...)
    assert read and read <= fields, read - fields


def test_flatten_and_report():
    results = {"synthetic": {"zeroshot": {"top1": np.float32(0.5), "num_examples": 90.0},
                             "retrieval": {"i2t_R@1": 1.0, "num_images": 30.0}}}
    assert runner.flatten(results) == {"synthetic/zeroshot/top1": 0.5,
                                       "synthetic/retrieval/i2t_R@1": 1.0}
    report = runner.make_report(results, {"image_size": 32}, seconds=1.234)
    assert report == {"model": {"image_size": 32}, "seconds": 1.2, "sources": {}, "results": {"synthetic": {
        "zeroshot": {"top1": 0.5, "num_examples": 90.0},
        "retrieval": {"i2t_R@1": 1.0, "num_images": 30.0}}}}
    assert json.loads(json.dumps(report)) == report


# ----------------------------------------------------------------------------------- model + CLI

# Small enough for 2 CPU cores: 2 images per class, one retrieval gallery, 2 captions per image.
TINY_EVAL = dict(synthetic_examples_per_class=2, synthetic_retrieval_rounds=1,
                 captions_per_image=2, batch_size=16)


def _vocabulary():
    from align_tf.tokenizer import RESERVED_TOKENS
    words = {w for pair in synthetic.CLASSES for w in pair} | {
        w for t in synthetic.TEMPLATES + synthetic.PROMPTS for w in re.findall(r"[a-z]+", t)}
    return RESERVED_TOKENS + sorted(words) + ["dark", "light", "big", "small"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A randomly initialised nano model saved as a run directory (its config.json asking for
    ``TINY_EVAL``) and as a SavedModel inside it."""
    from align_tf.export import export_saved_model
    from align_tf.models.dual_encoder import build_dual_encoder
    from align_tf.run_dir import RunDir
    from align_tf.tokenizer import TextPreprocessor

    run = RunDir(str(tmp_path_factory.mktemp("tiny_run"))).makedirs()
    config = base.get_config()
    config.model.text_size_name = "nano"
    config.data.image_size = 32
    config = runner.with_eval_overrides(config, **TINY_EVAL)
    run.save_config(config)
    run.save_vocabulary(_vocabulary())
    model = build_dual_encoder(config.model, len(_vocabulary()))
    tf.train.Checkpoint(model=model).save(os.path.join(run.checkpoint_dir, "ckpt"))
    preprocessor = TextPreprocessor(run.vocab_path, sequence_length=config.data.max_tokens)
    export_saved_model(model, preprocessor, run.savedmodel_path)
    return run.path, config, model, preprocessor


def test_run_plans_tracks_the_weights_and_matches_the_checkpoint(tiny_run):
    model_dir, config, model, preprocessor = tiny_run
    plans = runner.plans_from_config(config)
    encoder = encoder_for_model(model, preprocessor, config)
    first = runner.run_plans(encoder, plans)["synthetic"]
    assert first["zeroshot"]["num_examples"] == 60 and first["retrieval"]["num_captions"] == 60
    assert {"top1", "top5", "heldout_top1", "seen_top5"} <= set(first["zeroshot"])
    assert {"i2t_R@10", "t2i_mean_rank"} <= set(first["retrieval"])
    # The model_dir loader builds the same encoder: bit-identical numbers from the checkpoint.
    loaded = load_encoder(model_dir=model_dir)
    assert isinstance(loaded, KerasEncoder) and loaded.info()["checkpoint"].endswith("ckpt-1")
    assert runner.run_plans(loaded, plans)["synthetic"] == first
    # New weights → new numbers: nothing is cached across calls; old weights → the same again.
    old = [v.numpy() for v in model.image_encoder.weights]
    try:
        for v in model.image_encoder.trainable_weights:
            v.assign(tf.random.stateless_normal(v.shape, seed=(7, 7), dtype=v.dtype) * 0.2)
        changed = runner.run_plans(encoder, plans)["synthetic"]
        assert changed["retrieval"]["i2t_mean_rank"] != first["retrieval"]["i2t_mean_rank"]
    finally:
        for v, value in zip(model.image_encoder.weights, old):
            v.assign(value)
    assert runner.run_plans(encoder, plans)["synthetic"] == first


def test_evaluating_twice_traces_each_tower_once(tiny_run):
    _, config, model, preprocessor = tiny_run
    # 60 images and 60 captions in batches of 16: the last batch of each is smaller.
    plans = runner.plans_from_config(config, tasks="zeroshot,retrieval,knn")
    encoder = encoder_for_model(model, preprocessor, config)
    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        for _ in range(2):
            runner.run_plans(encoder, plans)
        encoder.embed_texts(["a red star"])  # a batch of one
    finally:
        logger.removeHandler(handler)
    assert "retracing" not in logs.getvalue()
    assert encoder._image_fn.experimental_get_tracing_count() == 1
    assert encoder._text_fn.experimental_get_tracing_count() == 1


def _cli(*args):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1")
    return subprocess.run([sys.executable, "-m", "align_tf.evaluate", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_cli_takes_config_json_and_checkpoint_equals_savedmodel(tiny_run, tmp_path):
    model_dir = tiny_run[0]
    # Only the tasks are given: sizes, counts and seeds come from the run's config.json.
    common = ["--dataset=synthetic", "--tasks=retrieval,zeroshot,knn,linear", "--linear_c=1.0"]
    reports = {}
    for kind, arg in (("ckpt", f"--model_dir={model_dir}"),
                      ("saved", f"--savedmodel={model_dir}/savedmodel")):
        out = tmp_path / f"{kind}.json"
        proc = _cli(arg, *common, f"--output={out}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "synthetic retrieval: i2t_R@1=" in proc.stdout
        assert "retracing" not in proc.stderr
        reports[kind] = json.loads(out.read_text())
    ckpt, saved = reports["ckpt"]["results"]["synthetic"], reports["saved"]["results"]["synthetic"]
    assert set(ckpt) == {"retrieval", "zeroshot", "knn", "linear"}
    assert ckpt["retrieval"]["num_images"] == 30 and ckpt["retrieval"]["num_captions"] == 60
    assert ckpt["zeroshot"]["num_examples"] == 60 and ckpt["knn"]["num_train"] == 60
    assert reports["ckpt"]["model"]["checkpoint"].endswith("ckpt-1")
    assert reports["ckpt"]["model"]["batch_size"] == 16
    assert reports["saved"]["model"]["image_size"] == 32  # read from the model_dir's config.json
    for task in ckpt:
        assert saved[task] == pytest.approx(ckpt[task], abs=1e-6), task


def test_cli_errors_are_one_line(tiny_run):
    proc = _cli(f"--model_dir={tiny_run[0]}", "--dataset=no_such_set")
    assert proc.returncode != 0
    assert ("align_tf.evaluate: error: eval.evaluators.no_such_set_auto.dataset: unknown "
            "dataset 'no_such_set'") in proc.stderr
    assert "Traceback" not in proc.stderr


def test_savedmodel_elsewhere_needs_image_size_and_embeds_like_the_checkpoint(tiny_run, tmp_path):
    import shutil
    model_dir = tiny_run[0]
    copy = str(tmp_path / "sm")
    shutil.copytree(os.path.join(model_dir, "savedmodel"), copy)  # no config.json beside it
    with pytest.raises(ValueError, match="--image_size"):
        load_encoder(savedmodel=copy)
    saved = load_encoder(savedmodel=copy, image_size=32)
    assert saved.batch_size == base.get_config().eval.batch_size
    ckpt = load_encoder(model_dir=model_dir)
    images = np.random.default_rng(0).integers(0, 256, (5, 40, 40, 3), dtype=np.uint8)
    texts = ["a red star", "a photo of a blue circle.", "zzz unknown words"]
    np.testing.assert_allclose(saved.embed_images(images), ckpt.embed_images(images), atol=1e-5)
    np.testing.assert_allclose(saved.embed_texts(texts), ckpt.embed_texts(texts), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(saved.embed_texts(texts), axis=1), 1.0, atol=1e-5)


# TRAINER WIRING: this test depends on align_tf.trainer writing RUN/eval.json with
# runner.make_report(runner.run_plans(encoder_for_model(model, preprocessor, config),
# runner.plans_from_config(config)), ...). If it fails while the tests above pass, look at the
# trainer's side first.
def test_cli_reproduces_the_trainers_eval_json_exactly(tmp_path):
    from test_scale import _tiny_config

    from align_tf import trainer
    from align_tf.run_dir import RunDir

    config = runner.with_eval_overrides(_tiny_config(steps=4, steps_per_loop=2), **TINY_EVAL)
    config.export.enabled = False
    model_dir = str(tmp_path / "run")
    result = trainer.train(config, model_dir, tf.distribute.OneDeviceStrategy("/cpu:0"), verbose=0)
    trainer.evaluate(result, config, model_dir)
    written = RunDir(model_dir).read_eval()

    out = tmp_path / "cli.json"
    proc = _cli(f"--model_dir={model_dir}", "--dataset=synthetic", f"--output={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads(out.read_text())
    assert set(again) == set(written) == {"model", "results", "sources", "seconds"}
    assert again["sources"] == written["sources"] == {"synthetic": "synthetic"}
    assert again["results"] == written["results"]  # every metric and count, bit for bit
    metrics = runner.flatten(written["results"])
    assert {"synthetic/zeroshot/heldout_top1", "synthetic/zeroshot/seen_top1",
            "synthetic/retrieval/i2t_R@1", "synthetic/retrieval/t2i_R@1"} <= set(metrics)
