"""``synthetic``: the built-in coloured-shapes corpus (``align_tf.data.synthetic``).

Training: its pairs live in memory (the trainer samples them by index, ``sampling.sample_arrays``:
exact O(1) resume), so it has no file stream and needs no vocabulary (one is learned from its
captions). Evaluation: fresh seeded renders (``eval.synthetic_seed``, far from training's
``seed``), so every evaluation of a model sees the same images; the classes are all 30 (colour,
shape) pairs, and retrieval is scored within galleries of one image per class.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from align_tf.data import synthetic
from align_tf.data.sources.base import CLASSIFICATION, PAIRS, RETRIEVAL, Source, option
from align_tf.data.sources.collections import ClassificationData, RetrievalData
from align_tf.data.sources.registry import register_source

SYNTHETIC = "synthetic"


@register_source(SYNTHETIC)
class SyntheticSource(Source):
    """The built-in corpus: pairs, labelled images and captioned galleries."""

    needs_vocabulary = False

    def kinds(self, options=None) -> set:
        return {PAIRS, CLASSIFICATION, RETRIEVAL}

    def validate(self, data) -> None:
        """The multilingual corpus' fields (``data.synthetic_languages`` and its mix / only)."""
        corpus_languages(data)

    def classification(self, options, train: bool = False, download: bool = False):
        """The zero-shot test images (``synthetic_seed``), or the kNN/linear-probe fit images
        (``synthetic_seed + 1``)."""
        return synthetic_classification("train" if train else "test",
                                        option(options, "synthetic_examples_per_class", 40),
                                        option(options, "synthetic_seed", 20_000) + int(train))

    def retrieval(self, options, download: bool = False):
        captions = option(options, "captions_per_image", 5)
        if not captions:
            raise ValueError("eval.captions_per_image must be >= 1 with the synthetic dataset "
                             "(captions are generated, not kept)")
        return synthetic_retrieval(option(options, "synthetic_retrieval_rounds", 4), captions,
                                   option(options, "synthetic_seed", 20_000) + 2)

    def groups(self) -> dict:
        return synthetic_groups()


def synthetic_arrays(seed: int, num_per_class: int, size: int) -> dict:
    """``num_per_class`` images of every class, in class order, rendered at ``size``."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, pair in enumerate(synthetic.CLASSES):
        for _ in range(num_per_class):
            images.append(synthetic.render(pair, size, rng)[0])
            labels.append(label)
    return {"image": np.stack(images), "label": np.asarray(labels, np.int64)}


def synthetic_classification(split: str, num_per_class: int, seed: int) -> ClassificationData:
    """``num_per_class`` clean renders of each (colour, shape) class from ``seed``; ``split`` only
    names the set (zero-shot tests on one seed, kNN and the linear probe fit on another)."""
    rendered = {}  # image size → arrays: rendered once, re-embedded every call

    def make(image_size):
        if image_size not in rendered:
            rendered[image_size] = synthetic_arrays(seed, num_per_class, image_size)
        return tf.data.Dataset.from_tensor_slices(rendered[image_size])

    return ClassificationData(f"{SYNTHETIC}/{split}", make,
                              [synthetic.class_name(p) for p in synthetic.CLASSES])


def synthetic_retrieval(rounds: int, captions_per_image: int, seed: int) -> RetrievalData:
    """``rounds`` galleries of one image per class, each image with ``captions_per_image`` clean
    captions in varied wording. Retrieval is scored within a gallery, so every query has one right
    answer: two renders of a class differ only in size and background, often described alike."""
    rendered = {}

    def make(size):
        if size not in rendered:
            rng = np.random.default_rng(seed)
            images, captions, galleries = [], [], []
            for gallery in range(rounds):
                for pair in synthetic.CLASSES:
                    image, frac, bg = synthetic.render(pair, size, rng)
                    images.append(image)
                    captions.append([synthetic.caption(pair, frac, bg, rng, noise=0.0, partial=0.0)
                                     for _ in range(captions_per_image)])
                    galleries.append(gallery)
            rendered[size] = {"image": np.stack(images), "captions": np.asarray(captions, object),
                              "gallery": np.asarray(galleries, np.int64)}
        return tf.data.Dataset.from_tensor_slices(rendered[size])

    return RetrievalData(f"{SYNTHETIC}/retrieval", make, captions_per_image)


def synthetic_groups() -> dict:
    """Label groups of the synthetic classes: pairs held out of training and pairs seen."""
    return {"heldout": [synthetic.CLASSES.index(p) for p in synthetic.HELD_OUT],
            "seen": [synthetic.CLASSES.index(p) for p in synthetic.SEEN]}


def multilingual_retrieval(rounds: int, captions_per_image: int, seed: int, size: int,
                           languages) -> dict:
    """``rounds`` galleries of one image per class (``synthetic_retrieval``'s protocol), each
    image with ``captions_per_image`` clean captions in every language of ``languages``:
    ``{"image", "gallery", "captions": {code: (N, captions_per_image) object array}}``. Images
    come from ``seed``, each language's captions from a stream of their own."""
    from align_tf.data.languages import LANGUAGES, corpus
    rng = np.random.default_rng(seed)
    images, bgs, pairs, galleries = [], [], [], []
    for gallery in range(rounds):
        for pair in synthetic.CLASSES:
            image, _, bg = synthetic.render(pair, size, rng)
            images.append(image)
            bgs.append(bg)
            pairs.append(pair)
            galleries.append(gallery)
    captions = {}
    for code in languages:
        crng = np.random.default_rng([seed, 1 + LANGUAGES.index(code)])
        captions[code] = np.asarray(
            [[corpus.caption(code, pair, bg, crng, noise=0.0, partial=0.0)
              for _ in range(captions_per_image)] for pair, bg in zip(pairs, bgs)], object)
    return {"image": np.stack(images), "gallery": np.asarray(galleries, np.int64),
            "captions": captions}


# --------------------------------------------------------------------------- the training corpus

def parse_languages(value, where: str = "data.synthetic_languages") -> tuple:
    """``"all"`` or a comma list of ``languages.LANGUAGES`` codes → the codes; "" → ()."""
    from align_tf.data import languages
    value = str(value or "").strip()
    if not value:
        return ()
    codes = languages.LANGUAGES if value == "all" else tuple(
        c.strip() for c in value.split(",") if c.strip())
    unknown = [c for c in codes if c not in languages.LANGUAGES]
    if unknown or len(set(codes)) != len(codes):
        problem = f"unknown language {unknown[0]!r}" if unknown else "a language twice"
        raise ValueError(f"{where}={value!r}: {problem}; choose from all, "
                         f"{', '.join(languages.LANGUAGES)}")
    return codes


def corpus_languages(data) -> dict | None:
    """``make_training_pairs``' ``languages``, ``mix`` and ``only`` from ``data`` (the config's
    data section), or None for the English corpus (``data.synthetic_languages`` ""). One-line
    ``ValueError`` naming the field.

    ``data.synthetic_language_mix``: ``"de:2,zh:1"`` (relative weights; "" equal);
    ``data.synthetic_language_only``: ``"red circle=en;blue star=de+fr"`` (these classes are
    captioned in these languages only)."""
    codes = parse_languages(data.synthetic_languages)
    if not codes:
        return None
    mix, only = None, {}
    mix_text = str(data.get("synthetic_language_mix", "") or "").strip()
    if mix_text:
        try:
            mix = {k.strip(): float(v) for k, v in (i.split(":") for i in mix_text.split(","))}
        except ValueError:
            raise ValueError(f"data.synthetic_language_mix={mix_text!r}: write code:weight "
                             "pairs, e.g. 'en:2,de:1'") from None
        if set(mix) - set(codes) or any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
            raise ValueError(f"data.synthetic_language_mix={mix_text!r}: weights >= 0 (one > 0) "
                             f"of data.synthetic_languages {', '.join(codes)}")
    only_text = str(data.get("synthetic_language_only", "") or "").strip()
    names = {synthetic.class_name(p): p for p in synthetic.CLASSES}
    for item in filter(None, (i.strip() for i in only_text.split(";"))):
        name, _, langs = item.partition("=")
        pair, langs = names.get(name.strip()), tuple(c.strip() for c in langs.split("+"))
        if pair is None or not set(langs) <= set(codes) or not all(langs):
            raise ValueError(f"data.synthetic_language_only: {item!r} is not 'colour shape="
                             f"code+code' with a class such as 'red circle' and languages of "
                             f"data.synthetic_languages")
        only[pair] = langs
    return {"languages": codes, "mix": mix, "only": only}


def training_pairs(config) -> dict:
    """The synthetic training corpus ``config`` asks for: the English one
    (``synthetic.make_pairs``), or with ``data.synthetic_languages`` the multilingual one
    (``languages.corpus.make_training_pairs``: the same images, captions in those languages)."""
    d = config.data
    kwargs = dict(noise=d.caption_noise, partial=d.caption_partial, seed=config.seed,
                  unnamed=d.synthetic_unnamed_colour, colour_only=d.synthetic_colour_only,
                  two=d.synthetic_two_shapes, variety=d.synthetic_variety)
    spec = corpus_languages(d)
    if spec is None:
        return synthetic.make_pairs(d.num_train_examples, d.image_size, **kwargs)
    from align_tf.data.languages import corpus
    return corpus.make_training_pairs(d.num_train_examples, d.image_size, **spec, **kwargs)
