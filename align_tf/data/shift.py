"""Shift sets for the synthetic corpus: its 30 (colour, shape) classes drawn in styles the training
corpus (``align_tf/data/synthetic.py``) never uses, the analogue of ImageNet-R and -Sketch.

Training draws a filled shape, a luminance outline around it, a radius of 22–40 % of the image,
fully inside it, on a dark or light gray background with a little noise, in its colour ±20 per RGB
channel. Each style here changes one of those and keeps the rest:

* ``outline``: the shape's outline only, in its colour, no fill;
* ``plain_background``: a flat mid-gray or tinted background (training's are dark or light);
* ``noise_background``: smooth coloured noise, like a photograph's clutter;
* ``scale_position``: tiny (radius 9–15 %) anywhere, corners included, or huge (48–62 %) with its
  centre near an edge, which cuts it;
* ``sketch``: pencil-like strokes on paper: a few jittered thin outlines and hatching inside;
* ``colour_jitter``: the fill's hue, saturation and value moved within the colour's name (hue
  ±0.03, saturation ×0.7–1, value ×0.8–1; never nearer another named colour), beyond training's
  ±20.

``arrays(style, per_class, size, seed)`` renders a labelled set (labels index
``synthetic.CLASSES``); the ``synthetic_shift`` source and evaluator report zero-shot accuracy on
each style, over the held-out and the seen pairs.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw

from align_tf.data import synthetic

STYLES = ("outline", "plain_background", "noise_background", "scale_position", "sketch",
          "colour_jitter")


def parse_styles(value, where: str = "shift_styles") -> tuple:
    """``"all"`` or a comma list of ``STYLES`` → the styles; one-line ``ValueError`` otherwise."""
    text = str(value or "").strip()
    styles = STYLES if text == "all" else tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in styles if s not in STYLES]
    if not styles or unknown or len(set(styles)) != len(styles):
        problem = f"unknown style {unknown[0]!r}" if unknown else "empty or repeated"
        raise ValueError(f"{where}={value!r}: {problem}; choose from all, {', '.join(STYLES)}")
    return styles


def _fill(colour: str, rng: np.random.Generator) -> tuple:
    """The colour as training jitters it (±20 per channel)."""
    rgb = np.array(synthetic.COLOURS[colour]) + rng.integers(-20, 21, 3)
    return tuple(int(v) for v in np.clip(rgb, 0, 255))


def _outline_points(shape: str, cx, cy, r, angle) -> list:
    """The closed outline of a shape as points (a circle as a 32-gon)."""
    if shape == "circle":
        return [(cx + r * math.cos(t), cy + r * math.sin(t))
                for t in np.linspace(0, 2 * math.pi, 32, endpoint=False)]
    return synthetic._polygon(shape, cx, cy, r, angle)


def _place(size: int, rng: np.random.Generator, low=0.22, high=0.40) -> tuple:
    """Training's placement: radius ``low``–``high`` of the size, the shape inside the image."""
    r = rng.uniform(low, high) * size
    cx, cy = rng.uniform(r, size - r, 2)
    return cx, cy, r


def _outline(pair, size, rng):
    image, _ = synthetic._background(size, rng)
    cx, cy, r = _place(size, rng)
    points = _outline_points(pair[1], cx, cy, r, rng.uniform(-0.25, 0.25))
    ImageDraw.Draw(image).line(points + points[:1], fill=_fill(pair[0], rng),
                               width=max(2, round(size / 16)), joint="curve")
    return image


def _plain_background(pair, size, rng):
    if rng.random() < 0.5:  # mid-gray: between training's dark (10-70) and light (170-245)
        rgb = (int(rng.integers(85, 156)),) * 3
    else:  # a pale or dark tint of any hue
        h, s = rng.random(), rng.uniform(0.15, 0.35)
        v = rng.choice([0.3, 0.85]) + rng.uniform(0, 0.1)
        rgb = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(h, s, v))
    image = Image.new("RGB", (size, size), rgb)
    cx, cy, r = _place(size, rng)
    synthetic._draw(ImageDraw.Draw(image), pair, cx, cy, r, float(np.mean(rgb)) < 128, rng)
    return image


def _noise_background(pair, size, rng):
    cells = int(rng.integers(3, 8))
    low = Image.fromarray(rng.integers(0, 256, (cells, cells, 3)).astype(np.uint8))
    smooth = np.asarray(low.resize((size, size), Image.BICUBIC), np.int16)
    noisy = np.clip(smooth + rng.integers(-25, 26, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(noisy)
    cx, cy, r = _place(size, rng)
    synthetic._draw(ImageDraw.Draw(image), pair, cx, cy, r, float(noisy.mean()) < 128, rng)
    return image


def _scale_position(pair, size, rng):
    image, dark = synthetic._background(size, rng)
    if rng.random() < 0.5:  # tiny, anywhere
        r = rng.uniform(0.09, 0.15) * size
        cx, cy = rng.uniform(r, size - r, 2)
    else:  # huge, its centre near an edge, which cuts it (every shape is wider than 0.16 r)
        r = rng.uniform(0.48, 0.62) * size
        near, along = rng.uniform(0, 0.12) * size, rng.uniform(0.2, 0.8) * size
        near = near if rng.random() < 0.5 else size - near
        cx, cy = (near, along) if rng.random() < 0.5 else (along, near)
    synthetic._draw(ImageDraw.Draw(image), pair, cx, cy, r, dark, rng)
    return image


def _sketch(pair, size, rng):
    paper = rng.integers(232, 253) + rng.integers(-5, 6, (size, size, 3))
    image = Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8))
    cx, cy, r = _place(size, rng)
    colour, shape = pair
    points = _outline_points(shape, cx, cy, r, rng.uniform(-0.25, 0.25))
    # Hatching: parallel diagonal strokes, kept inside the shape by its mask.
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).polygon(points, fill=255)
    hatch = image.copy()
    draw = ImageDraw.Draw(hatch)
    step, slope = max(3, size // 10), rng.choice([-1, 1])
    for k in range(-size, 2 * size, step):
        draw.line([(k, 0), (k + slope * size, size)], fill=_fill(colour, rng), width=1)
    image = Image.composite(hatch, image, mask)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 4))):  # a few jittered passes over the outline
        jittered = [(x + rng.normal(0, 0.05 * r), y + rng.normal(0, 0.05 * r)) for x, y in points]
        draw.line(jittered + jittered[:1], fill=_fill(colour, rng), width=max(1, size // 40))
    return image


def jitter_colour(colour: str, rng: np.random.Generator) -> tuple:
    """``colour``'s RGB with hue ±0.03, saturation ×0.7–1 and value ×0.8–1, redrawn until no other
    named colour is nearer (RGB distance; yellow and orange are close): still that colour."""
    named = np.array(list(synthetic.COLOURS.values()), float)
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in synthetic.COLOURS[colour]))
    while True:
        rgb = colorsys.hsv_to_rgb((h + rng.uniform(-0.03, 0.03)) % 1.0, s * rng.uniform(0.7, 1.0),
                                  v * rng.uniform(0.8, 1.0))
        rgb = tuple(int(round(255 * c)) for c in rgb)
        if np.sqrt(((named - rgb) ** 2).sum(1)).argmin() == list(synthetic.COLOURS).index(colour):
            return rgb


def _colour_jitter(pair, size, rng):
    return Image.fromarray(synthetic.render(pair, size, rng, rgb=jitter_colour(pair[0], rng))[0])


_RENDER = {"outline": _outline, "plain_background": _plain_background,
           "noise_background": _noise_background, "scale_position": _scale_position,
           "sketch": _sketch, "colour_jitter": _colour_jitter}


def render(pair, style: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One image of ``pair`` = ``(colour, shape)`` in ``style``: uint8 ``(size, size, 3)``."""
    return np.asarray(_RENDER[style](pair, size, rng).convert("RGB"))


def arrays(style: str, per_class: int, size: int, seed: int) -> dict:
    """``per_class`` images of every class of ``synthetic.CLASSES`` in ``style``, in class order:
    ``{"image": uint8 (30 * per_class, size, size, 3), "label": int64}``. Each style draws from
    its own stream (``seed``, the style's index), so adding a style changes no other."""
    rng = np.random.default_rng([seed, STYLES.index(style)])
    images = [render(pair, style, size, rng)
              for pair in synthetic.CLASSES for _ in range(per_class)]
    labels = np.repeat(np.arange(len(synthetic.CLASSES), dtype=np.int64), per_class)
    return {"image": np.stack(images), "label": labels}
