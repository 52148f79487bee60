"""The built-in synthetic corpus: held-out pairs really are absent from training, images match labels."""

import re

import numpy as np

from align_tf.data import synthetic


def test_held_out_pairs_never_appear_in_training_images_or_text():
    data = synthetic.make_pairs(3000, size=32, noise=0.4, partial=0.2, seed=3)
    held = {synthetic.CLASSES.index(p) for p in synthetic.HELD_OUT}
    assert not held & set(data["label"].tolist())
    for text in data["caption"]:
        words = set(re.findall(r"[a-z]+", text))
        for colour, shape in synthetic.HELD_OUT:
            assert not {colour, shape} <= words, text


def _described_pairs(text):
    """(colour, shape) pairs a caption could be describing: per object phrase ("a red circle and
    a blue star" has two), every named colour with every shape in that phrase."""
    found = set()
    for phrase in re.split(r" and | next to |\|", text):
        words = set(re.findall(r"[a-z]+", phrase))
        found |= {(c, s) for c in synthetic.COLOURS for s in synthetic.SHAPES if {c, s} <= words}
    return found


def test_extra_examples_never_show_or_name_held_out_pairs():
    data = synthetic.make_pairs(3000, size=32, noise=0.3, partial=0.3, seed=4, unnamed=0.3,
                                colour_only=0.2, two=0.3)
    kinds = {"unnamed": 0, "colour": 0, "two": 0}
    for text, label, objects in zip(data["caption"], data["label"], data["objects"]):
        assert not set(objects) & set(synthetic.HELD_OUT), (objects, text)   # images
        assert not _described_pairs(text) & set(synthetic.HELD_OUT), text   # captions
        words = set(re.findall(r"[a-z]+", text))
        if label >= 0:
            assert objects == (synthetic.CLASSES[label],)
            continue
        if len(objects) == 2:
            kinds["two"] += 1
            assert objects[0] != objects[1] and all(p in synthetic.SEEN for p in objects)
        elif objects[0][1] == "blob":   # a named colour, no shape: the caption names no shape
            kinds["colour"] += 1
            assert objects[0][0] in synthetic.COLOURS
            assert not words & set(synthetic.SHAPES), text
            assert words & {objects[0][0]} or not words & set(synthetic.COLOURS), text
        else:                           # an unnamed colour: the caption names only the shape
            kinds["unnamed"] += 1
            assert objects[0][0] == "unnamed"
            assert not words & set(synthetic.COLOURS), text
            assert words & set(synthetic.SHAPES) <= {objects[0][1]}, text
    assert 800 < kinds["unnamed"] < 1000 and 500 < kinds["colour"] < 700 and 800 < kinds["two"] < 1000


def test_unnamed_fills_are_far_from_every_named_colour():
    named = np.array(list(synthetic.COLOURS.values()), np.float32)
    rng = np.random.default_rng(0)
    for _ in range(500):
        rgb = np.array(synthetic.unnamed_colour(rng), np.float32)
        assert np.sqrt(((named - rgb) ** 2).sum(1)).min() >= synthetic.UNNAMED_MIN_DISTANCE > 100
    # In the images too: no pixel of an unnamed-colour shape is near a named colour.
    data = synthetic.make_pairs(100, size=32, seed=2, unnamed=1.0)
    pixels = data["image"].reshape(-1, 3).astype(np.float32)
    assert np.sqrt(((pixels[:, None] - named[None]) ** 2).sum(-1)).min() > 60


def test_zero_extra_shares_leave_the_corpus_unchanged():
    """The evaluation draws with the extra shares at 0: its images must not depend on them."""
    a = synthetic.make_pairs(50, size=24, seed=7)
    b = synthetic.make_pairs(50, size=24, seed=7, unnamed=0.0, colour_only=0.0, two=0.0)
    assert (a["image"] == b["image"]).all() and a["caption"] == b["caption"]
    assert (a["label"] >= 0).all()


def test_caption_mix_and_noise_share():
    data = synthetic.make_pairs(4000, size=16, noise=0.25, partial=0.1, seed=0)
    full = sum(synthetic.class_name(synthetic.CLASSES[label]).split()[0] in text
               and synthetic.CLASSES[label][1] in text
               for text, label in zip(data["caption"], data["label"]))
    # Correct full captions: the non-noisy, non-partial share (0.65), plus junk-suffixed ones.
    assert 0.6 < full / 4000 < 0.8


def test_image_shows_the_labelled_colour():
    data = synthetic.make_pairs(200, size=48, noise=0.0, seed=1)
    palette = np.array(list(synthetic.COLOURS.values()), np.float32)
    for image, label in zip(data["image"], data["label"]):
        pixels = image.reshape(-1, 3).astype(np.float32)
        saturated = pixels[pixels.max(1) - pixels.min(1) > 80]
        nearest = np.argmin(((saturated[:, None] - palette[None]) ** 2).sum(-1), axis=1)
        colour = list(synthetic.COLOURS)[np.bincount(nearest).argmax()]
        assert colour == synthetic.CLASSES[label][0]
