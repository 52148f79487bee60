"""Built-in synthetic image/alt-text corpus: coloured shapes with noisy captions.

It exists so ``python -m align_tf.train`` can train, evaluate and export on a CPU with no download,
and still test what ALIGN is about: learning from *noisy* pairs and generalising zero-shot. Images
show one shape of one colour (random size, position, rotation, textured background; see below for
the optional extra kinds). Captions vary
in wording; a share are deliberately noisy like web alt-text (file names, boilerplate, captions of
another image, junk suffixes), and some name only the colour or only the shape.

Some (colour, shape) pairs never appear together in training (``HELD_OUT``): each colour and each
shape is seen, but not in that combination. Zero-shot accuracy on those pairs measures whether the
towers compose "red" and "star" rather than memorising "red star".

Three optional kinds of training example (``make_pairs``' ``unnamed``, ``colour_only`` and ``two``
shares; ``config.data.synthetic_unnamed_colour`` / ``synthetic_colour_only`` /
``synthetic_two_shapes``) decouple colour from shape in the image tower, which otherwise learns
colour-specific shape features and maps an unseen pair to the nearest seen pair of the same colour
(a red star to "red triangle"):

* shapes filled with a random colour far from every named one (``unnamed_colour``: grays and
  off-palette hues at least ``UNNAMED_MIN_DISTANCE`` away), captioned by the shape only ("a photo
  of a star"): shape features must work whatever the fill;
* patches of a named colour with no shape (a thick random stroke), captioned by the colour only
  ("something green"): colour features must work whatever the outline;
* two smaller shapes of two different *seen* pairs side by side, captioned "a red circle and a
  blue star": a colour and a shape that never form a pair do occur in the same image and caption,
  so the towers cannot learn "red, therefore not a star".

None of them shows a held-out pair or describes one (each object phrase of a caption names at most
one seen pair). Their label is ``-1``; ``objects`` lists what each image shows. With all three
shares 0 (the evaluation's setting) the random stream, and so every image and caption, is the
same as without them.

``make_pairs(variety=...)`` draws a share of the images (of every kind) varied: a flat, gradient
or noisier gray background and a wider range of sizes (``render(varied=True)``); the share is
``data.synthetic_variety``, 0 in the default config (docs/robustness.md). The shift sets of
``align_tf/data/shift.py`` (docs/robustness.md) measure transfer to styles training never draws.
Evaluation renders plain images.
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
# Fills for shape-only examples are random colours at least this far (RGB distance) from every named
# colour, so no such image looks like a named pair (held-out or not); fill jitter is ±20 per channel.
UNNAMED_MIN_DISTANCE = 120.0
# Radius fraction of a varied training image (``render(varied=True)``; plain: 0.22-0.40). Varied
# images keep the luminance outline: without it (outlines 0-3 px wide) held-out pairs stopped
# composing (default run, in-distribution held-out 35 % and 0 % at seeds 0 and 1; docs/robustness.md).
VARIED_FRAC = (0.16, 0.45)


def unnamed_colour(rng: np.random.Generator):
    """A random RGB fill far from every named colour: a gray a third of the time, else any colour."""
    named = np.array(list(COLOURS.values()), np.float32)
    while True:
        rgb = np.full(3, rng.integers(0, 256)) if rng.random() < 1 / 3 else rng.integers(0, 256, 3)
        if np.sqrt(((named - rgb) ** 2).sum(1)).min() >= UNNAMED_MIN_DISTANCE:
            return tuple(int(v) for v in rgb)

TEMPLATES = (
    "a {c} {s}", "a photo of a {c} {s}", "a picture of a {c} {s}", "{c} {s}",
    "a {s} that is {c}", "a {c} {s} on a {bg} background", "clip art of a {c} {s}",
    "a {size} {c} {s}", "an image showing a {c} {s}", "{c} {s} icon", "the {s} is {c}",
    "a drawing of a {size} {c} {s}",
)
PARTIAL_TEMPLATES = ("a {s}", "a photo of a {s}", "something {c}", "a {c} thing", "{s} shape")
SHAPE_TEMPLATES = ("a {s}", "a photo of a {s}", "a picture of a {s}", "{s} shape", "clip art of a {s}",
                   "a {size} {s}", "a {s} on a {bg} background", "{s} icon", "a drawing of a {s}")
TWO_TEMPLATES = ("a {a} and a {b}", "a photo of a {a} and a {b}", "{a} and {b}",
                 "a {a} next to a {b}", "two shapes: a {a} and a {b}", "a picture of a {a} and a {b}")
COLOUR_TEMPLATES = ("something {c}", "a {c} thing", "{c}", "a photo of something {c}", "{c} paint",
                    "a {c} blob", "a {c} splash on a {bg} background", "the colour {c}")
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


def _squiggle(cx, cy, r, rng: np.random.Generator):
    """A thick random stroke's points: a patch of colour with no circle, polygon, star or cross."""
    points, angle = [], rng.uniform(0, 2 * math.pi)
    x, y = cx - 0.5 * r * math.cos(angle), cy - 0.5 * r * math.sin(angle)
    for _ in range(int(rng.integers(4, 7))):
        points.append((x, y))
        angle += rng.uniform(0.6, 2.0) * rng.choice((-1, 1))
        x = float(np.clip(x + 0.6 * r * math.cos(angle), cx - r, cx + r))
        y = float(np.clip(y + 0.6 * r * math.sin(angle), cy - r, cy + r))
    points.append((x, y))
    return points


def _background(size: int, rng: np.random.Generator):
    dark = rng.random() < 0.5
    base = rng.integers(10, 70) if dark else rng.integers(170, 245)
    bg = np.full((size, size, 3), base, np.int16) + rng.integers(-12, 13, (size, size, 3))
    return Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8)), dark


def _draw(draw, pair, cx, cy, r, dark: bool, rng: np.random.Generator, rgb=None):
    colour, shape = pair
    jitter = rng.integers(-20, 21, 3) if rgb is None else np.zeros(3, int)
    base_rgb = rgb if rgb is not None else COLOURS[colour]
    fill = tuple(int(v) for v in np.clip(np.array(base_rgb) + jitter, 0, 255))
    # A luminance outline (light on dark, dark on light) gives every colour the same shape edges,
    # so shape features need not be relearned per colour: this is what lets unseen pairs compose.
    outline = (235, 235, 235) if dark else (20, 20, 20)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=outline, width=2)
    elif shape == "blob":
        points, stroke = _squiggle(cx, cy, r, rng), max(3, int(0.4 * r))
        draw.line(points, fill=outline, width=stroke + 4, joint="curve")
        draw.line(points, fill=fill, width=stroke, joint="curve")
    else:
        draw.polygon(_polygon(shape, cx, cy, r, rng.uniform(-0.25, 0.25)), fill=fill,
                     outline=outline, width=2)


def _varied_background(size: int, rng: np.random.Generator):
    """A training background of a varied image: dark or light gray as ``_background``, but flat,
    a gradient between two grays of that range in any direction, or with strong noise (±35)."""
    dark = rng.random() < 0.5
    low, high = (10, 70) if dark else (170, 245)
    kind = rng.integers(3)
    if kind == 0:
        bg = np.full((size, size), float(rng.integers(low, high)))
    elif kind == 1:
        a, b = rng.integers(low, high, 2)
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1) - 0.5
        t = np.clip(0.5 + (xx * math.cos(angle) + yy * math.sin(angle)) / math.sqrt(0.5), 0, 1)
        bg = a + (float(b) - a) * t
    else:
        bg = np.full((size, size), float(rng.integers(low, high)))
    bg = np.repeat(bg[..., None], 3, axis=-1)
    if kind == 2:
        bg = bg + rng.integers(-35, 36, (size, size, 3))
    return Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8)), dark


def render(pair, size: int, rng: np.random.Generator, rgb=None, varied: bool = False):
    """Draws one shape; returns ``(uint8 image (size, size, 3), radius fraction, background word)``.

    ``pair`` is ``(colour, shape)``; shape may be ``"blob"`` (a thick random stroke). ``rgb``
    overrides the fill colour (then ``colour`` is only a name, e.g. ``"unnamed"``). ``varied``
    (training's share ``data.synthetic_variety``): a flat, gradient or noisier gray background
    and a radius of 16-45 %.
    """
    image, dark = _varied_background(size, rng) if varied else _background(size, rng)
    frac = rng.uniform(*(VARIED_FRAC if varied else (0.22, 0.40)))
    r = frac * size
    cx, cy = rng.uniform(r, size - r, 2)
    _draw(ImageDraw.Draw(image), pair, cx, cy, r, dark, rng, rgb)
    return np.asarray(image), frac, "dark" if dark else "light"


def render_two(pairs, size: int, rng: np.random.Generator, varied: bool = False):
    """Draws two smaller shapes side by side (left/right or top/bottom halves, order random);
    returns ``(uint8 image, background word)``. ``varied``: ``render``'s backgrounds, the sizes
    unchanged."""
    image, dark = _varied_background(size, rng) if varied else _background(size, rng)
    draw = ImageDraw.Draw(image)
    vertical = rng.random() < 0.5
    for k, pair in enumerate(pairs):
        r = rng.uniform(0.14, 0.22) * size
        lo, hi = (k * size / 2 + r, (k + 1) * size / 2 - r)
        a, b = rng.uniform(lo, max(lo, hi)), rng.uniform(r, size - r)
        cx, cy = (b, a) if vertical else (a, b)
        _draw(draw, pair, cx, cy, r, dark, rng)
    return np.asarray(image), "dark" if dark else "light"


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


def partial_caption(word, kind: str, frac, bg, rng: np.random.Generator, noise: float) -> str:
    """A caption naming only the shape (``kind="shape"``) or only the colour (``"colour"``); with
    probability ``noise`` junk, or the caption followed by a junk suffix."""
    u = rng.random()
    if u < noise / 2:
        return JUNK[rng.integers(len(JUNK))].format(n=rng.integers(10000))
    templates = SHAPE_TEMPLATES if kind == "shape" else COLOUR_TEMPLATES
    text = templates[rng.integers(len(templates))].format(
        s=word, c=word, bg=bg, size=_size_word(frac))
    if u < noise:
        text += " | " + JUNK[rng.integers(len(JUNK))].format(n=rng.integers(10000))
    return text


def make_pairs(num: int, size: int = 64, pairs=SEEN, noise: float = 0.2, partial: float = 0.1,
               seed: int = 0, unnamed: float = 0.0, colour_only: float = 0.0, two: float = 0.0,
               variety: float = 0.0):
    """Generates ``num`` examples of classes drawn uniformly from ``pairs``.

    A share ``unnamed`` of examples instead shows a shape (any of ``SHAPES``) in a random fill far
    from every named colour (``unnamed_colour``) with a shape-only caption, and a share ``colour_only`` a blob of a
    named colour with a colour-only caption, and a share ``two`` two shapes of two different pairs
    from ``pairs`` captioned "a red circle and a blue star" (junk instead with probability
    ``noise``); all three have label ``-1``. A share ``variety`` of the images, of every kind, is
    drawn varied (``render``'s ``varied``; captions unchanged); with ``variety`` 0 the stream is
    the one before variety existed.

    Returns:
      dict with ``image`` (uint8 ``(num, size, size, 3)``), ``caption`` (list of str),
      ``label`` (int index into ``CLASSES``, or -1) and ``objects`` (per example, the tuple of
      ``(colour, shape)`` drawn; colour ``"unnamed"`` for a random unnamed fill, shape ``"blob"``
      for a colour-only patch).
    """
    rng = np.random.default_rng(seed)
    images = np.empty((num, size, size, 3), np.uint8)
    captions, labels, objects = [], [], []
    colours_in_pairs = sorted({c for c, _ in pairs}, key=list(COLOURS).index)
    for i in range(num):
        varied = bool(variety > 0 and rng.random() < variety)
        u = rng.random() if unnamed > 0 or colour_only > 0 or two > 0 else 1.0
        if u < unnamed:
            shape = SHAPES[rng.integers(len(SHAPES))]
            images[i], frac, bg = render(("unnamed", shape), size, rng, rgb=unnamed_colour(rng),
                                         varied=varied)
            captions.append(partial_caption(shape, "shape", frac, bg, rng, noise))
            labels.append(-1)
            objects.append((("unnamed", shape),))
            continue
        if u < unnamed + colour_only:
            colour = colours_in_pairs[rng.integers(len(colours_in_pairs))]
            images[i], frac, bg = render((colour, "blob"), size, rng, varied=varied)
            captions.append(partial_caption(colour, "colour", frac, bg, rng, noise))
            labels.append(-1)
            objects.append(((colour, "blob"),))
            continue
        if u < unnamed + colour_only + two:
            first, second = rng.choice(len(pairs), 2, replace=False)
            two_pairs = (pairs[first], pairs[second])
            images[i], bg = render_two(two_pairs, size, rng, varied)
            if rng.random() < noise:
                text = JUNK[rng.integers(len(JUNK))].format(n=rng.integers(10000))
            else:
                text = TWO_TEMPLATES[rng.integers(len(TWO_TEMPLATES))].format(
                    a=class_name(two_pairs[0]), b=class_name(two_pairs[1]))
            captions.append(text)
            labels.append(-1)
            objects.append(two_pairs)
            continue
        pair = pairs[rng.integers(len(pairs))]
        images[i], frac, bg = render(pair, size, rng, varied=varied)
        captions.append(caption(pair, frac, bg, rng, noise, partial, pool=pairs))
        labels.append(CLASSES.index(pair))
        objects.append((pair,))
    return {"image": images, "caption": captions, "label": np.asarray(labels, np.int32),
            "objects": objects}
