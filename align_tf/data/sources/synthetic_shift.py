"""``synthetic_shift``: the synthetic corpus' 30 classes drawn in styles training never uses
(``align_tf/data/shift.py``): an evaluation set only, the analogue of ImageNet-R and -Sketch.

Its labelled images are every style's, pooled (``classification``: any classification evaluator
reads them); the ``synthetic_shift`` evaluator scores each style apart (``style_sets``). Class
names, prompts and the held-out / seen groups are the synthetic corpus' own.
"""

from __future__ import annotations

import tensorflow as tf

from align_tf.data import shift, synthetic
from align_tf.data.sources.base import CLASSIFICATION, Source, option
from align_tf.data.sources.collections import ClassificationData
from align_tf.data.sources.registry import register_source
from align_tf.data.sources.synthetic import SYNTHETIC, synthetic_groups

SYNTHETIC_SHIFT = "synthetic_shift"
# Defaults of the options it reads (the synthetic_shift evaluator's fields of the same names).
STYLES, PER_CLASS, SEED = "all", 10, 30_000


@register_source(SYNTHETIC_SHIFT)
class SyntheticShiftSource(Source):
    """The synthetic classes in unseen styles: labelled images, nothing to train on."""

    needs_vocabulary = False

    def __init__(self, argument: str = ""):
        super().__init__(argument)
        self._sets = {}  # (style, per_class, seed) → ClassificationData, rendered once per size

    @property
    def prompt_name(self) -> str:
        """``synthetic``: the corpus' class names and its own prompts (``templates=auto``)."""
        return SYNTHETIC

    def kinds(self, options=None) -> set:
        return {CLASSIFICATION}

    def groups(self) -> dict:
        return synthetic_groups()

    def style_sets(self, options) -> dict:
        """``{style: ClassificationData}`` of ``options``' ``shift_styles`` (``"all"`` or a comma
        list), ``shift_examples_per_class`` images per class, from ``shift_seed``."""
        styles = shift.parse_styles(option(options, "shift_styles", STYLES))
        per_class = option(options, "shift_examples_per_class", PER_CLASS)
        seed = option(options, "shift_seed", SEED)
        return {style: self._set(style, per_class, seed) for style in styles}

    def _set(self, style: str, per_class: int, seed: int) -> ClassificationData:
        key = (style, per_class, seed)
        if key not in self._sets:
            rendered = {}

            def make(image_size):
                if image_size not in rendered:
                    rendered[image_size] = shift.arrays(style, per_class, image_size, seed)
                return tf.data.Dataset.from_tensor_slices(rendered[image_size])

            self._sets[key] = ClassificationData(
                f"{SYNTHETIC_SHIFT}/{style}", make,
                [synthetic.class_name(p) for p in synthetic.CLASSES])
        return self._sets[key]

    def classification(self, options, train: bool = False, download: bool = False):
        """Every style's images, pooled (one style at a time: ``style_sets``)."""
        if train:
            raise ValueError(f"{SYNTHETIC_SHIFT} is a test set: it has no fit split (kNN and the "
                             "linear probe fit on 'synthetic')")
        sets = list(self.style_sets(options).values())

        def make(image_size):
            ds = sets[0].examples(image_size)
            for other in sets[1:]:
                ds = ds.concatenate(other.examples(image_size))
            return ds

        return ClassificationData(f"{SYNTHETIC_SHIFT}/all", make, sets[0].classnames)
