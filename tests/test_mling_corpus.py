"""The multilingual synthetic corpus: word tables with agreement, held-out pairs held out in
every language, the language mix and ``only``, the noise model, and the English corpus as it was."""

import numpy as np
import pytest

from align_tf import prompts as prompts_module
from align_tf.data import synthetic
from align_tf.data.languages import LANGUAGES, corpus, get, phrase, prompts


def test_exactly_the_ten_languages_with_every_colour_and_shape():
    assert LANGUAGES == ("en", "de", "fr", "cs", "es", "ru", "zh", "ja", "ar", "hi")
    for code in LANGUAGES:
        lang = get(code)
        assert set(lang.COLOURS) == set(synthetic.COLOURS)
        assert set(lang.SHAPES) == set(synthetic.SHAPES)
        names = {phrase(code, p) for p in synthetic.CLASSES}
        assert len(names) == len(synthetic.CLASSES), code  # every class has its own name
        for template in lang.TEMPLATES + lang.PARTIAL_TEMPLATES + lang.PROMPTS:
            for pair in synthetic.CLASSES:
                template.format(**lang.forms(*pair, "dark"), n=1)
    with pytest.raises(ValueError, match="unknown language 'xx'"):
        get("xx")


@pytest.mark.parametrize("code,pair,expected", [
    ("de", ("red", "circle"), "ein Foto von einem roten Kreis."),
    ("de", ("purple", "square"), "ein violettes Quadrat."),
    ("fr", ("green", "star"), "une photo d'une étoile verte."),
    ("fr", ("purple", "circle"), "une photo d'un cercle violet."),
    ("es", ("yellow", "cross"), "una foto de una cruz amarilla."),
    ("cs", ("red", "star"), "fotka: červená hvězda."),
    ("cs", ("blue", "triangle"), "fotka: modrý trojúhelník."),
    ("ru", ("blue", "star"), "фото: синяя звезда."),
    ("ru", ("yellow", "cross"), "фото: жёлтый крест."),
    ("zh", ("red", "circle"), "一张红色的圆形的照片。"),
    ("ja", ("red", "circle"), "赤い円の写真。"),
    ("ja", ("green", "square"), "緑の正方形の写真。"),
    ("ar", ("red", "circle"), "صورة دائرة حمراء."),
    ("ar", ("red", "square"), "صورة مربع أحمر."),
    ("hi", ("green", "star"), "हरे तारे की तस्वीर।"),  # oblique case before की
])
def test_agreement_in_gender_and_case(code, pair, expected):
    assert expected in prompts(code, pair)
    assert prompts_module.multilingual_prompts(code, pair) == prompts(code, pair)


def test_held_out_pairs_stay_held_out_in_every_language():
    data = corpus.make_pairs(600, size=16, seed=3)
    assert set(data["language"]) == set(LANGUAGES)
    assert not {synthetic.CLASSES[k] for k in data["label"]} & set(synthetic.HELD_OUT)
    held = {code: [get(code).forms(*p)["x"] for p in synthetic.HELD_OUT] for code in LANGUAGES}
    for text, code in zip(data["caption"], data["language"]):
        assert not any(name in text for name in held[code]), (code, text)
    # The noise model: junk suffixes, file-name junk and partial captions occur in each language.
    assert sum(" | " in t for t in data["caption"]) > 10
    assert sum(t.startswith(("img_", "dsc", "IMG-", "1920")) for t in data["caption"]) > 3


def test_mix_and_only_one_language_for_some_classes():
    only = {("red", "circle"): ("de",), ("blue", "star"): ("zh", "ja")}
    data = corpus.make_pairs(400, size=16, languages=("en", "de", "zh", "ja"),
                             mix={"en": 1, "de": 1, "zh": 1, "ja": 0}, only=only, seed=1)
    counts = {c: data["language"].count(c) for c in ("en", "de", "zh", "ja")}
    assert counts["ja"] == 0 and min(counts["en"], counts["de"], counts["zh"]) > 80
    names = {code: get(code).forms("red", "circle")["x"] for code in ("en", "zh")}
    for text, code, label in zip(data["caption"], data["language"], data["label"]):
        pair = synthetic.CLASSES[label]
        if pair in only:
            assert code in only[pair]
        assert names.get(code, "\0") not in text, (code, text)  # not even as junk
    with pytest.raises(ValueError, match="no language"):
        corpus.make_pairs(2, languages=("en",), mix={"de": 1})


def test_english_corpus_unchanged_and_images_as_synthetic():
    """synthetic.make_pairs is untouched; the multilingual corpus draws images with render."""
    a, b = synthetic.make_pairs(5, size=16, seed=2), synthetic.make_pairs(5, size=16, seed=2)
    assert a["caption"] == b["caption"]
    data = corpus.make_pairs(3, size=16, languages=("fr",), seed=4)
    rng = np.random.default_rng(4)
    pair = synthetic.SEEN[rng.integers(len(synthetic.SEEN))]
    image, _, _ = synthetic.render(pair, 16, rng)
    np.testing.assert_array_equal(data["image"][0], image)


def test_name_templates_take_class_names_in_each_language():
    for code in LANGUAGES:
        templates = prompts_module.multilingual_templates(code)
        assert templates and all(t.count("{}") == 1 for t in templates)
        assert phrase(code, ("red", "star")) in templates[0].format(phrase(code, ("red", "star")))


def test_training_corpus_is_the_english_examples_captioned_in_every_language():
    """make_training_pairs (data.synthetic_languages): the English corpus' images and extra kinds,
    held-out pairs described in no language, two-shape captions naming both pairs, ``only``."""
    kinds = dict(noise=0.2, partial=0.3, seed=5, unnamed=0.3, colour_only=0.1, two=0.35)
    data = corpus.make_training_pairs(500, size=16, **kinds)
    english = synthetic.make_pairs(500, size=16, **kinds)
    np.testing.assert_array_equal(data["image"], english["image"])
    assert data["objects"] == english["objects"]
    assert set(data["language"]) == set(LANGUAGES)
    held = {code: [get(code).forms(*p)["x"] for p in synthetic.HELD_OUT] for code in LANGUAGES}
    for text, code, objects in zip(data["caption"], data["language"], data["objects"]):
        assert not any(name in text for name in held[code]), (code, text)
        if len(objects) == 2 and corpus.AND[code] in text:
            assert text == corpus.AND[code].join(get(code).forms(*p)["ax"] for p in objects)
    assert sum(len(o) == 2 for o in data["objects"]) > 100

    only = {("red", "circle"): ("de",)}
    data = corpus.make_training_pairs(300, size=16, languages=("en", "de"), only=only, **kinds)
    for text, code, objects in zip(data["caption"], data["language"], data["objects"]):
        if ("red", "circle") in objects:
            assert code == "de", (code, text)
        assert "red circle" not in text


def test_background_word_is_read_back_from_the_image():
    rng = np.random.default_rng(0)
    for _ in range(40):
        image, _, bg = synthetic.render(synthetic.SEEN[0], 16, rng)
        assert corpus._background_word(image) == bg
