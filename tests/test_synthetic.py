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
