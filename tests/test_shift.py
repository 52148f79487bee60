"""Shift sets on the synthetic corpus (``align_tf/data/shift.py``, the ``synthetic_shift`` source
and evaluator): the styles are drawn as documented, the evaluator's numbers equal a NumPy
recomputation from a tiny model's own embeddings, per style and per held-out / seen group, and
the training corpus' variety (``data.synthetic_variety``) is drawn while evaluation stays plain;
the default run classifies a style no code here draws otherwise."""

import importlib
import re

import numpy as np
import pytest

from align_tf import prompts
from align_tf.configs import load_config_file
from align_tf.data import shift, synthetic
from align_tf.evaluation import runner
from align_tf.evaluation.embed import encoder_for_model

SIZE = 32


def test_styles_render_every_class_deterministically():
    for style in shift.STYLES:
        a = shift.arrays(style, 2, SIZE, seed=5)
        assert a["image"].shape == (60, SIZE, SIZE, 3) and a["image"].dtype == np.uint8
        np.testing.assert_array_equal(a["label"], np.repeat(np.arange(30), 2))
        np.testing.assert_array_equal(shift.arrays(style, 2, SIZE, seed=5)["image"], a["image"])
        assert not np.array_equal(shift.arrays(style, 2, SIZE, seed=6)["image"], a["image"])
    # A style's stream is its own: asking for fewer styles changes none of the images.
    assert shift.parse_styles("sketch,outline") == ("sketch", "outline")
    assert shift.parse_styles("all") == shift.STYLES
    for bad, message in (("outline,cartoon", "unknown style 'cartoon'"),
                         ("outline,outline", "empty or repeated"), ("", "empty or repeated")):
        with pytest.raises(ValueError, match=message) as e:
            shift.parse_styles(bad, "eval.evaluators.x.shift_styles")
        assert "\n" not in str(e.value) and "eval.evaluators.x.shift_styles" in str(e.value)


def test_each_style_differs_from_training_as_documented():
    rng = np.random.default_rng(0)
    red = np.array(synthetic.COLOURS["red"])
    # outline: the red pixels of a circle are a ring, not its disc (training fills it).
    def red_share_of_disc(image):
        ys, xs = np.nonzero(np.abs(image.astype(int) - red).sum(-1) < 70)
        disc = np.pi / 4 * (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        return len(ys) / disc

    outline = [red_share_of_disc(shift.render(("red", "circle"), "outline", 64, rng))
               for _ in range(20)]
    filled = [red_share_of_disc(synthetic.render(("red", "circle"), 64, rng)[0])
              for _ in range(20)]
    assert max(outline) < 0.65 < min(filled), (max(outline), min(filled))
    # plain background: one flat colour in the corners (training's have ±12 noise).
    for _ in range(10):
        image = shift.render(("blue", "star"), "plain_background", SIZE, rng).astype(int)
        corners = image[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert (corners == corners[0]).all() or (image[0] == image[0, 0]).all()
    # scale_position: tiny (bounding box under 0.35 of the image) or cut by an edge; training's
    # shapes are neither.
    def extent(image):
        ring = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(int)
        background = np.median(ring, axis=0)  # a cut shape covers under half of the border
        ys, xs = np.nonzero((np.abs(image.astype(int) - background) > 40).any(-1))
        touches = min(ys.min(), xs.min()) == 0 or max(ys.max(), xs.max()) == 95
        return max(ys.max() - ys.min(), xs.max() - xs.min()) + 1, touches

    for _ in range(40):
        side, touches = extent(shift.render(("green", "square"), "scale_position", 96, rng))
        assert side < 0.35 * 96 or touches, (side, touches)
        side, touches = extent(synthetic.render(("green", "triangle"), 96, rng)[0])
        assert side >= 0.35 * 96 and not touches, (side, touches)


def test_colour_jitter_stays_within_the_colour_name():
    rng = np.random.default_rng(1)
    names = list(synthetic.COLOURS)
    named = np.array([synthetic.COLOURS[n] for n in names], float)
    for colour in names:
        rgbs = np.array([shift.jitter_colour(colour, rng) for _ in range(200)], float)
        nearest = np.sqrt(((rgbs[:, None] - named[None]) ** 2).sum(-1)).argmin(1)
        assert (nearest == names.index(colour)).all(), colour
        # ... and moves further than training's ±20 per channel.
        assert np.abs(rgbs - synthetic.COLOURS[colour]).max() > 20


def _vocabulary():
    from align_tf.tokenizer import RESERVED_TOKENS
    words = {w for pair in synthetic.CLASSES for w in pair} | {
        w for t in synthetic.PROMPTS for w in re.findall(r"[a-z]+", t)}
    return RESERVED_TOKENS + sorted(words)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A randomly initialised nano model, its encoder, and the default config's shift entry
    alone (2 images per class and style)."""
    from align_tf.models.dual_encoder import build_dual_encoder
    from align_tf.tokenizer import TextPreprocessor
    config = load_config_file("default")
    entry = config.eval.evaluators.synthetic_shift
    assert entry.type == "synthetic_shift" and entry.dataset == "synthetic_shift"
    config.eval.evaluators = {"synthetic_shift": entry.to_dict()}
    config.model.text_size_name = "nano"
    config.data.image_size = SIZE
    vocab = _vocabulary()
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    model = build_dual_encoder(config.model, len(vocab))
    preprocessor = TextPreprocessor(str(path), sequence_length=config.data.max_tokens)
    config = runner.with_eval_overrides(config, shift_examples_per_class=2)
    return config, encoder_for_model(model, preprocessor, config)


def _numpy_zero_shot(encoder, images, labels, templates):
    """Top-1 over all, held-out and seen pairs, recomputed from the encoder's embeddings."""
    names = [synthetic.class_name(p) for p in synthetic.CLASSES]
    text = encoder.embed_texts([t.format(n) for n in names for t in templates])
    text = text.reshape(len(names), len(templates), -1)
    text /= np.linalg.norm(text, axis=-1, keepdims=True)
    classes = text.mean(1)
    classes /= np.linalg.norm(classes, axis=-1, keepdims=True)
    predicted = (encoder.embed_images(images) @ classes.T).argmax(1)
    held = np.isin(labels, [synthetic.CLASSES.index(p) for p in synthetic.HELD_OUT])
    right = predicted == labels
    return {"top1": right.mean(), "heldout_top1": right[held].mean(),
            "seen_top1": right[~held].mean()}


def test_default_eval_reports_each_style_as_numpy_computes_it(tiny):
    config, encoder = tiny
    plans = runner.plans_from_config(config)
    assert dict(plans.sources)["synthetic_shift"] == "synthetic_shift"
    results = runner.run_plans(encoder, plans)
    report = runner.make_report(results, {}, 0.0)["results"]["synthetic_shift"]["zeroshot"]
    assert set(report) == set(shift.STYLES)
    templates = prompts.get_templates("auto", "synthetic")
    for style in shift.STYLES:
        a = shift.arrays(style, 2, SIZE, seed=30_000)
        expected = _numpy_zero_shot(encoder, a["image"], a["label"], templates)
        got = report[style]
        assert got["num_examples"] == 60 and got["num_classes"] == 30
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-9), (style, key)
    assert "synthetic_shift/zeroshot/sketch/heldout_top1" in runner.flatten(results)


def test_shift_entries_are_checked_in_one_line(tiny):
    config, _ = tiny
    for field, value, message in (("shift_styles", "outline,cartoon", "unknown style"),
                                  ("shift_examples_per_class", 0, "must be an integer >= 1"),
                                  ("templates", "nope", "unknown templates")):
        bad = runner.with_eval_overrides(config)
        with bad.eval.evaluators.synthetic_shift.ignore_type():
            bad.eval.evaluators.synthetic_shift[field] = value
        with pytest.raises(ValueError) as e:
            runner.plans_from_config(bad)
        assert f"eval.evaluators.synthetic_shift.{field}" in str(e.value), e.value
        assert message in str(e.value) and "\n" not in str(e.value)
    # The shift set is a test set: the synthetic_shift evaluator reads nothing else, and kNN has no
    # fit split on it.
    with pytest.raises(ValueError, match="'synthetic_shift' needs a synthetic_shift dataset"):
        runner.plans_from_config(config, datasets="synthetic", tasks="synthetic_shift")
    with pytest.raises(ValueError, match="no fit split"):
        runner.plans_from_config(config, datasets="synthetic_shift", tasks="knn")


def _corner_noise(images):
    """The standard deviation of each image's 3×3 top-left corner, which no shape reaches
    (training's background: ±12 uniform noise, about 7)."""
    return images[:, :3, :3].reshape(len(images), -1).astype(float).std(1)


def test_training_variety_is_drawn_and_evaluation_images_stay_plain():
    from align_tf.data.sources.synthetic import synthetic_arrays
    kwargs = dict(size=32, seed=5, unnamed=0.3, two=0.35)  # no strokes: they reach corners
    plain = _corner_noise(synthetic.make_pairs(300, variety=0.0, **kwargs)["image"])
    assert (plain > 4).all() and (plain < 10).all(), plain.min()
    varied = synthetic.make_pairs(600, variety=1.0, **kwargs)
    noise = _corner_noise(varied["image"])
    # Flat or gradient backgrounds, and noisier ones.
    assert 0.4 < np.mean(noise < 4) < 0.8 and 0.15 < np.mean(noise > 15) < 0.45
    # A config's share, through the corpus the trainer reads (English and multilingual): about
    # 0.89 of the varied images stand out by their corner.
    from align_tf.data.sources.synthetic import training_pairs
    config = load_config_file("default")
    config.data.update(num_train_examples=600, image_size=32, synthetic_colour_only=0.0,
                       synthetic_variety=0.3)
    expected = 0.3 * np.mean((noise < 4) | (noise > 15))
    for languages in ("", "de,zh"):
        config.data.synthetic_languages = languages
        drawn = _corner_noise(training_pairs(config)["image"])
        assert abs(np.mean((drawn < 4) | (drawn > 15)) - expected) < 0.1, languages
    # Varied or not, no held-out pair is shown, and a labelled image shows its colour.
    assert not set(varied["label"].tolist()) & {synthetic.CLASSES.index(p) for p in
                                                synthetic.HELD_OUT}
    palette = np.array(list(synthetic.COLOURS.values()), float)
    shapes = synthetic.make_pairs(200, size=48, seed=6, variety=1.0)
    for image, label in zip(shapes["image"], shapes["label"]):
        pixels = image.reshape(-1, 3).astype(float)
        saturated = pixels[pixels.max(1) - pixels.min(1) > 80]
        nearest = np.argmin(((saturated[:, None] - palette[None]) ** 2).sum(-1), axis=1)
        assert list(synthetic.COLOURS)[np.bincount(nearest).argmax()] == \
            synthetic.CLASSES[label][0]
    # Evaluation renders plain images only: its in-distribution set is what it always was.
    test = _corner_noise(synthetic_arrays(20_000, 2, 32)["image"])
    assert (test > 4).all() and (test < 10).all()


def _unseen_style(pair, rng, size=48):
    """A style no training image, shift set or other test draws: the shape filled flat in its
    named colour, no outline, on white, its geometry written here (not synthetic's polygons)."""
    from PIL import Image, ImageDraw
    image = Image.new("RGB", (size, size), (255, 255, 255))
    r = rng.uniform(0.25, 0.35) * size
    cx, cy = rng.uniform(r, size - r, 2)
    colour, shape = pair
    fill = synthetic.COLOURS[colour]
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        return np.asarray(image)
    if shape == "square":
        points = [(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)]
    elif shape == "triangle":
        points = [(0, -1), (0.87, 0.5), (-0.87, 0.5)]
    elif shape == "star":
        points = [((1 if k % 2 == 0 else 0.42) * np.sin(k * np.pi / 5),
                   -(1 if k % 2 == 0 else 0.42) * np.cos(k * np.pi / 5)) for k in range(10)]
    else:  # cross: a plus sign of arms 0.3 r wide
        a, b = 0.3, 1.0
        points = [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b),
                  (-a, a), (-b, a), (-b, -a), (-a, -a)]
    draw.polygon([(cx + r * x, cy + r * y) for x, y in points], fill=fill)
    return np.asarray(image)


def test_default_run_classifies_an_unseen_style_by_bare_class_names(default_run):
    """[shift]: the default run's exported module, asked as a user would (bare class names, "red
    circle", through ``zero_shot_classify``), on shapes in ``_unseen_style``: held-out pairs
    ≥ 5× chance. Also each shift set is in the run's eval.json."""
    import json
    import os

    import tensorflow as tf
    importlib.import_module("tensorflow_text")  # the exported tokenizer's ops, as for hub.load
    returncode = default_run["proc"].wait(timeout=1100)  # tests/conftest.py started it
    assert returncode == 0, open(default_run["log"]).read()[-3000:]
    run = default_run["model_dir"]
    with open(os.path.join(run, "eval.json")) as f:
        styles = json.load(f)["results"]["synthetic_shift"]["zeroshot"]
    assert set(styles) == set(shift.STYLES)
    module = tf.saved_model.load(os.path.join(run, "savedmodel"))
    rng = np.random.default_rng(77)
    pairs = [p for p in synthetic.HELD_OUT for _ in range(40)]
    images = np.stack([_unseen_style(p, rng) for p in pairs]).astype(np.float32) / 255
    names = tf.constant([synthetic.class_name(p) for p in synthetic.CLASSES])
    probs = module.signatures["zero_shot_classify"](images=tf.constant(images), class_names=names)
    predicted = probs["probabilities"].numpy().argmax(1)
    accuracy = np.mean(predicted == [synthetic.CLASSES.index(p) for p in pairs])
    assert accuracy >= 5 / len(synthetic.CLASSES), accuracy
