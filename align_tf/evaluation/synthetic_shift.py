"""Zero-shot accuracy under distribution shift on the synthetic corpus: the ``synthetic_shift``
evaluator, on the ``synthetic_shift`` source (``align_tf/data/shift.py``'s styles).

Each style is scored apart, as ``zeroshot`` scores a set (prompt-ensembled class embeddings,
top-k over the 30 classes, and over the held-out and the seen pairs), and reported as::

    results["synthetic_shift"]["zeroshot"]["<style>"]["top1" | "heldout_top1" | "seen_top1" | ...]

(the metrics are named ``"<style>/<metric>"``; the report nests them). In-distribution accuracy
is ``results["synthetic"]["zeroshot"]``: the gap between the two is what the corpus' variety buys.
"""

from __future__ import annotations

import ml_collections

from align_tf import prompts
from align_tf.data import shift
from align_tf.evaluation.registry import check_int, register_evaluator
from align_tf.evaluation.zero_shot import TOPK, ZeroShotEvaluator


@register_evaluator("synthetic_shift")
class SyntheticShiftEvaluator:
    """Zero-shot top-k per shift style (``shift_styles``), overall, held-out and seen.

    Args:
      sets: ``{style: ClassificationData}`` (``SyntheticShiftSource.style_sets``).
      templates: prompt templates.
      groups: ``{group: label ids}`` reported apart (``heldout``, ``seen``).
    """

    needs = "synthetic_shift"  # what a wrong dataset is told it needs (``accepts`` decides)
    report_as = "zeroshot"  # results["synthetic_shift"]["zeroshot"][style][metric]
    defaults = {
        "shift_styles": "all",            # "all" or a comma list of align_tf.data.shift.STYLES
        "shift_examples_per_class": 10,   # images per class and style (30 classes)
        "shift_seed": 30_000,             # each style draws from (shift_seed, its index)
        "templates": "auto",              # align_tf.prompts; auto: the corpus' own prompts
    }

    @classmethod
    def accepts(cls, source, kinds) -> bool:
        """Only a source that draws the classes in styles (``synthetic_shift``)."""
        return callable(getattr(source, "style_sets", None))

    @classmethod
    def validate(cls, entry, where: str) -> None:
        shift.parse_styles(entry.shift_styles, f"{where}.shift_styles")
        check_int(entry.shift_examples_per_class, f"{where}.shift_examples_per_class", 1)
        check_int(entry.shift_seed, f"{where}.shift_seed", 0)
        # Its prompts are zeroshot's: checked as zeroshot checks them (no ITM re-ranking here).
        ZeroShotEvaluator.validate(ml_collections.ConfigDict(
            {"templates": entry.templates, "rerank_k": 0}), where)

    @classmethod
    def from_config(cls, entry, data):
        source = data.source
        return cls(source.style_sets(entry), prompts.get_templates(entry.templates,
                                                                   source.prompt_name),
                   source.groups())

    def __init__(self, sets: dict, templates, groups=None):
        self.sets, self.templates, self.groups = dict(sets), tuple(templates), dict(groups or {})

    def run(self, encoder) -> dict:
        """``{"<style>/<metric>": value}``: ``zeroshot``'s metrics on each style's images."""
        out = {}
        for style, data in self.sets.items():
            metrics = ZeroShotEvaluator(data, self.templates, TOPK, self.groups).run(encoder)
            out.update({f"{style}/{name}": value for name, value in metrics.items()})
        return out
