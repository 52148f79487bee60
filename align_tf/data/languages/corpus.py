"""The multilingual synthetic corpus: ``synthetic``'s images, captions in a mix of languages.

Images are drawn exactly as ``synthetic.make_pairs`` draws them (``synthetic.render``); captions
come from the per-language tables with the same noise model (junk alt-texts, captions of another
image, junk suffixes, colour- or shape-only captions). Held-out pairs are never drawn or
described, in any language: mismatched captions describe a pair from ``pairs`` only.

``make_pairs`` draws plain one-shape examples; ``make_training_pairs`` (what training reads with
``data.synthetic_languages``) captions ``synthetic.make_pairs``' own examples, its extra kinds
(unnamed colours, colour-only strokes, two shapes) included, in the chosen languages.
"""

from __future__ import annotations

import numpy as np

from align_tf.data import synthetic
from align_tf.data.languages import LANGUAGES, get

# Alt-text junk that reads the same in every language (file names, sizes).
FILE_JUNK = ("img_{n}.jpg", "dsc{n}", "1920x1080", "IMG-{n}.png")


def _pick(options, rng: np.random.Generator):
    return options[rng.integers(len(options))]


def caption(code: str, pair, bg: str, rng: np.random.Generator, noise: float = 0.2,
            partial: float = 0.1, pool=synthetic.SEEN) -> str:
    """A caption of an image of ``pair`` in language ``code``: junk with probability ``noise``
    (boilerplate, another pair from ``pool``, or a junk suffix, as ``synthetic.caption``),
    colour- or shape-only with probability ``partial``, otherwise a full description."""
    lang = get(code)
    junk = lang.JUNK + FILE_JUNK
    u = rng.random()
    if u < noise:
        kind = rng.integers(3)
        if kind == 0:
            return _pick(junk, rng).format(n=rng.integers(10000))
        if kind == 1:
            pair = pool[rng.integers(len(pool))]
        text = _pick(lang.TEMPLATES, rng).format(**lang.forms(*pair, bg))
        return text + " | " + _pick(junk, rng).format(n=rng.integers(10000)) if kind == 2 else text
    if u < noise + partial:
        return _pick(lang.PARTIAL_TEMPLATES, rng).format(**lang.forms(*pair, bg))
    return _pick(lang.TEMPLATES, rng).format(**lang.forms(*pair, bg))


def _weights(languages, mix) -> np.ndarray:
    """Normalised language weights; ``mix``: None (uniform), or {code: weight}."""
    w = np.array([1.0 if mix is None else float(mix.get(c, 0.0)) for c in languages])
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"language mix {mix!r} gives no language of {languages} a weight > 0")
    return w / w.sum()


def make_pairs(num: int, size: int = 64, languages=LANGUAGES, mix: dict | None = None,
               only: dict | None = None, pairs=synthetic.SEEN, noise: float = 0.2,
               partial: float = 0.1, seed: int = 0) -> dict:
    """``num`` examples of classes drawn uniformly from ``pairs``, captioned in ``languages``.

    Args:
      mix: ``{code: weight}`` of caption languages (None: uniform over ``languages``).
      only: ``{(colour, shape): codes}``: captions of these classes use only these languages (so
        cross-lingual transfer to the others is measurable).
      pairs, noise, partial, seed: as ``synthetic.make_pairs``.

    Returns:
      dict with ``image`` (uint8 ``(num, size, size, 3)``), ``caption``, ``language`` (the code
      of each caption), ``label`` (index into ``synthetic.CLASSES``) and ``objects``.
    """
    languages = tuple(languages)
    for code in languages:
        get(code)
    base = _weights(languages, mix)
    only = {tuple(p): tuple(c) for p, c in (only or {}).items()}
    for p, codes in only.items():
        if p not in synthetic.CLASSES or not set(codes) <= set(languages):
            raise ValueError(f"only: {p} → {codes} names an unknown class or language")
    rng = np.random.default_rng(seed)
    images = np.empty((num, size, size, 3), np.uint8)
    captions, codes_out, labels = [], [], []
    for i in range(num):
        pair = pairs[rng.integers(len(pairs))]
        images[i], _, bg = synthetic.render(pair, size, rng)
        w = base * [c in only.get(pair, languages) for c in languages]
        if w.sum() <= 0:
            raise ValueError(f"only: {pair}'s languages have weight 0 in the mix")
        code = languages[rng.choice(len(languages), p=w / w.sum())]
        pool = [p for p in pairs if code in only.get(p, languages)]  # junk keeps `only` too
        captions.append(caption(code, pair, bg, rng, noise, partial, pool=pool))
        codes_out.append(code)
        labels.append(synthetic.CLASSES.index(pair))
    return {"image": images, "caption": captions, "language": codes_out,
            "label": np.asarray(labels, np.int32),
            "objects": [(synthetic.CLASSES[k],) for k in labels]}


# "a red circle and a blue star": the conjunction joining two indefinite phrases (``ax``). Arabic
# و is written joined to the next word.
AND = {"en": " and ", "de": " und ", "fr": " et ", "cs": " a ", "es": " y ", "ru": " и ",
       "zh": "和", "ja": "と", "ar": " و", "hi": " और "}


def _only_fields(templates, need: str, without: tuple) -> tuple:
    """The templates that use field ``{need}`` (or one starting with it) and none of ``without``."""
    return tuple(t for t in templates if "{" + need in t and not any(
        "{" + w + "}" in t for w in without))


def _background_word(image) -> str:
    """``synthetic.render``'s background word, read back from an image's corners (shapes never
    cover more than one of them; backgrounds are dark ≤ 82 or light ≥ 158)."""
    corners = [image[0, 0], image[0, -1], image[-1, 0], image[-1, -1]]
    return "dark" if np.median([c.mean() for c in corners]) < 120 else "light"


def _object_caption(code: str, objects, bg: str, rng, noise: float, partial: float,
                    pool) -> str:
    """A caption in ``code`` for what an image of ``synthetic.make_pairs`` shows (``objects``:
    one pair, an unnamed-colour shape, a named-colour blob, or two pairs); the noise model is
    ``synthetic.partial_caption``'s and ``make_pairs``' two-shape one."""
    lang = get(code)
    junk = lang.JUNK + FILE_JUNK
    if len(objects) == 2:
        if rng.random() < noise:
            return _pick(junk, rng).format(n=rng.integers(10000))
        return AND[code].join(lang.forms(*p, bg)["ax"] for p in objects)
    colour, shape = objects[0]
    if colour != "unnamed" and shape != "blob":
        return caption(code, objects[0], bg, rng, noise, partial, pool=pool)
    u = rng.random()
    if u < noise / 2:
        return _pick(junk, rng).format(n=rng.integers(10000))
    if colour == "unnamed":  # a shape in a colour far from every named one: the shape only
        templates = _only_fields(lang.PARTIAL_TEMPLATES, "s", ("c", "cn"))
        fields = lang.forms("red", shape, bg)
    else:  # a named colour without a shape: the colour only
        templates = _only_fields(lang.PARTIAL_TEMPLATES, "c", ("s", "so", "a"))
        fields = lang.forms(colour, "circle", bg)
    text = _pick(templates, rng).format(**fields)
    return text + " | " + _pick(junk, rng).format(n=rng.integers(10000)) if u < noise else text


def make_training_pairs(num: int, size: int = 64, languages=LANGUAGES, mix: dict | None = None,
                        only: dict | None = None, pairs=synthetic.SEEN, noise: float = 0.2,
                        partial: float = 0.1, seed: int = 0, unnamed: float = 0.0,
                        colour_only: float = 0.0, two: float = 0.0,
                        variety: float = 0.0) -> dict:
    """``synthetic.make_pairs``' examples (the same images, the extra kinds ``unnamed``,
    ``colour_only``, ``two`` and ``variety`` included), captioned in a mix of ``languages``.

    Captions come from a stream of their own (``seed``, 1), so the images are exactly the English
    corpus'. ``mix`` and ``only`` as ``make_pairs``; a two-shape image whose pairs share no allowed
    language is captioned in one of the first pair's languages, naming that pair only.

    Returns:
      ``synthetic.make_pairs``' dict with ``caption`` in the chosen languages, plus ``language``.
    """
    languages = tuple(languages)
    base = _weights(languages, mix)
    only = {tuple(p): tuple(c) for p, c in (only or {}).items()}
    for p, codes in only.items():
        if p not in synthetic.CLASSES or not set(codes) <= set(languages):
            raise ValueError(f"only: {p} → {codes} names an unknown class or language")
    out = synthetic.make_pairs(num, size, pairs=pairs, noise=noise, partial=partial, seed=seed,
                               unnamed=unnamed, colour_only=colour_only, two=two,
                               variety=variety)
    rng = np.random.default_rng([seed, 1])
    captions, codes_out = [], []
    for image, objects in zip(out["image"], out["objects"]):
        named = [p for p in objects if p in synthetic.CLASSES]
        allowed = set(languages)
        for p in named:
            allowed &= set(only.get(p, languages))
        if not allowed:  # two pairs with no language in common: describe the first alone
            objects = named[:1]
            allowed = set(only.get(named[0], languages))
        w = base * [c in allowed for c in languages]
        if w.sum() <= 0:
            raise ValueError(f"only: {named}'s languages have weight 0 in the mix")
        code = languages[rng.choice(len(languages), p=w / w.sum())]
        pool = [p for p in pairs if code in only.get(p, languages)]
        captions.append(_object_caption(code, objects, _background_word(image), rng, noise,
                                        partial, pool))
        codes_out.append(code)
    return dict(out, caption=captions, language=codes_out)
