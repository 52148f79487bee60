"""Built-in synthetic image/alt-text corpus: coloured shapes with noisy captions.

It exists so ``python -m align_tf.train`` can train, evaluate and export on a CPU with no download,
and still test what ALIGN is about: learning from *noisy* pairs and generalising zero-shot. Images
show one shape of one colour (random size, position, rotation, textured background). Captions vary
in wording; a share are deliberately noisy like web alt-text (file names, boilerplate, captions of
another image, junk suffixes), and some name only the colour or only the shape.

Some (colour, shape) pairs never appear together in training (``HELD_OUT``): each colour and each
shape is seen, but not in that combination. Zero-shot accuracy on those pairs measures whether the
text tower composes "red" and "star" rather than memorising "red star".
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 70, 230),
    "yellow": (245, 225, 30),
    "purple": (140, 40, 190),
    "orange": (250, 140, 10),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
CLASSES = tuple((c, s) for c in COLOURS for s in SHAPES)
# One unseen pair per shape, each with a different colour.
HELD_OUT = (("red", "star"), ("green", "circle"), ("blue", "triangle"), ("yellow", "cross"),
            ("purple", "square"))
SEEN = tuple(p for p in CLASSES if p not in HELD_OUT)

TEMPLATES = (
    "a {c} {s}", "a photo of a {c} {s}", "a picture of a {c} {s}", "{c} {s}",
    "a {s} that is {c}", "a {c} {s} on a {bg} background", "clip art of a {c} {s}",
    "a {size} {c} {s}", "an image showing a {c} {s}", "{c} {s} icon", "the {s} is {c}",
    "a drawing of a {size} {c} {s}",
)
PARTIAL_TEMPLATES = ("a {s}", "a photo of a {s}", "something {c}", "a {c} thing", "{s} shape")
JUNK = ("img_{n}.jpg", "dsc{n}", "click here to download", "1920x1080", "stock photo {n}",
        "free vector graphics", "alt img", "untitled", "image {n}")
# Zero-shot prompts; "{}" is the class name "red star".
PROMPTS = ("a photo of a {}.", "a {}.", "a picture of a {}.", "clip art of a {}.")


def class_name(pair) -> str:
    return f"{pair[0]} {pair[1]}"


def _polygon(shape, cx, cy, r, angle):
    if shape == "square":
        pts = [(angle + math.pi / 4 + k * math.pi / 2, r) for k in range(4)]
    elif shape == "triangle":
        pts = [(angle - math.pi / 2 + k * 2 * math.pi / 3, r) for k in range(3)]
    elif shape == "star":
        pts = [(angle - math.pi / 2 + k * math.pi / 5, r if k % 2 == 0 else 0.42 * r) for k in range(10)]
    elif shape == "cross":
        w = 0.33 * r
        corners = [(w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w), (-w, -r), (w, -r),
                   (w, -w), (r, -w), (r, w), (w, w)]
        return [(cx + x * math.cos(angle) - y * math.sin(angle),
                 cy + x * math.sin(angle) + y * math.cos(angle)) for x, y in corners]
    else:
        raise ValueError(shape)
    return [(cx + rr * math.cos(a), cy + rr * math.sin(a)) for a, rr in pts]


def render(pair, size: int, rng: np.random.Generator):
    """Draws one shape; returns ``(uint8 image (size, size, 3), radius fraction, background word)``."""
    colour, shape = pair
    dark = rng.random() < 0.5
    base = rng.integers(10, 70) if dark else rng.integers(170, 245)
    bg = np.full((size, size, 3), base, np.int16) + rng.integers(-12, 13, (size, size, 3))
    image = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    frac = rng.uniform(0.22, 0.40)
    r = frac * size
    cx, cy = rng.uniform(r, size - r, 2)
    jitter = rng.integers(-20, 21, 3)
    fill = tuple(int(v) for v in np.clip(np.array(COLOURS[colour]) + jitter, 0, 255))
    # A luminance outline (light on dark, dark on light) gives every colour the same shape edges,
    # so shape features need not be relearned per colour: this is what lets unseen pairs compose.
    outline = (235, 235, 235) if dark else (20, 20, 20)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=outline, width=2)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, rng.uniform(-0.25, 0.25)), fill=fill,
                     outline=outline, width=2)
    return np.asarray(image), frac, "dark" if dark else "light"


def _size_word(frac) -> str:
    return "big" if frac > 0.31 else "small"


def caption(pair, frac, bg, rng: np.random.Generator, noise: float, partial: float = 0.1,
            pool=SEEN) -> str:
    """A caption for an image of ``pair``: junk with probability ``noise``, colour-only or
    shape-only with probability ``partial``, otherwise a full description. Mismatched junk
    captions describe a pair from ``pool`` (never a held-out pair: those must not occur in training
    text at all, or the text tower learns them as junk)."""
    c, s = pair
    u = rng.random()
    if u < noise:
        kind = rng.integers(3)
        if kind == 0:  # boilerplate / file names
            return JUNK[rng.integers(len(JUNK))].format(n=rng.integers(10000))
        if kind == 1:  # caption of some other image
            c, s = pool[rng.integers(len(pool))]
        text = TEMPLATES[rng.integers(len(TEMPLATES))]
        text = text.format(c=c, s=s, bg=bg, size=_size_word(frac))
        return text + " | " + JUNK[rng.integers(len(JUNK))].format(n=rng.integers(10000)) \
            if kind == 2 else text
    if u < noise + partial:
        return PARTIAL_TEMPLATES[rng.integers(len(PARTIAL_TEMPLATES))].format(c=c, s=s)
    return TEMPLATES[rng.integers(len(TEMPLATES))].format(
        c=c, s=s, bg=bg, size=_size_word(frac))


def make_pairs(num: int, size: int = 64, pairs=SEEN, noise: float = 0.2, partial: float = 0.1,
               seed: int = 0):
    """Generates ``num`` examples of classes drawn uniformly from ``pairs``.

    Returns:
      dict with ``image`` (uint8 ``(num, size, size, 3)``), ``caption`` (list of str) and
      ``label`` (int index into ``CLASSES``).
    """
    rng = np.random.default_rng(seed)
    images = np.empty((num, size, size, 3), np.uint8)
    captions, labels = [], []
    for i in range(num):
        pair = pairs[rng.integers(len(pairs))]
        images[i], frac, bg = render(pair, size, rng)
        captions.append(caption(pair, frac, bg, rng, noise, partial, pool=pairs))
        labels.append(CLASSES.index(pair))
    return {"image": images, "caption": captions, "label": np.asarray(labels, np.int32)}
