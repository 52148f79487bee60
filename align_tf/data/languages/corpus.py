"""The multilingual synthetic corpus: ``synthetic``'s images, captions in a mix of languages.

Images are drawn exactly as ``synthetic.make_pairs`` draws them (``synthetic.render``); captions
come from the per-language tables with the same noise model (junk alt-texts, captions of another
image, junk suffixes, colour- or shape-only captions). Held-out pairs are never drawn or
described, in any language: mismatched captions describe a pair from ``pairs`` only.
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
