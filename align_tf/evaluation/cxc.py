"""Crisscrossed Captions retrieval (ALIGN's Table 2): image→text, text→image, text→text and
image→image R@K over the MS-COCO Karpathy split (5K images, 25K captions for ``test``) with CxC's
extended positives (Parekh et al., EACL 2021, arXiv 2004.15020, §3 and §5):

* a rated pair is positive at ``agg_score >= 3`` for SITS and STS, ``>= 2.5`` for SIS (§3);
* i2t / t2i: the original COCO image–caption pairs stay positive, plus the SITS positives;
* t2t: a caption's co-captions (the other captions of its image) and its STS positives, either
  way round; i2i: an image's SIS positives, either way round;
* intra-modal queries never retrieve themselves (the query is not a candidate);
* a query with no positive left is dropped, and counted (``num_{dir}_dropped``).

Ranks and ties as in ``intra_modal.positive_ranks``. Reported under ``results["cxc"]
["retrieval"]`` (``{i2t,t2i,t2t,i2i}_R@{1,5,10}``, fractions); the command also prints the
paper's Table 2 layout ×100.
"""

from __future__ import annotations

import numpy as np

from align_tf.evaluation.intra_modal import check_ks_and, positive_ranks, recalls
from align_tf.evaluation.registry import register_evaluator
from align_tf.evaluation.retrieval import parse_ks

THRESHOLDS = {"sits": 3.0, "sts": 3.0, "sis": 2.5}  # CxC §3
DIRECTIONS = ("i2t", "t2i", "t2t", "i2i")


def _lists(n: int, pairs) -> list:
    """Per item ``0..n-1``, the sorted unique partners of ``(item, partner)`` pairs."""
    out = [[] for _ in range(n)]
    for a, b in pairs:
        out[int(a)].append(int(b))
    return [np.unique(np.asarray(x, np.int64)) for x in out]


def cxc_positives(text_to_image, num_images: int, pairs: dict,
                  thresholds: dict = THRESHOLDS) -> dict:
    """``{direction: per-query positive candidate indices}`` by CxC's rule (module docstring).

    Args:
      text_to_image: ``(N_txt,)`` each caption's image.
      num_images: images in the split.
      pairs: ``{"sits": (caption, image, score), "sts": (caption, caption, score), "sis":
        (image, image, score)}``.
    """
    text_to_image = np.asarray(text_to_image, np.int64)
    num_texts = len(text_to_image)

    def positive(task):
        first, second, score = pairs[task]
        keep = np.asarray(score) >= thresholds[task]
        return np.asarray(first)[keep], np.asarray(second)[keep]

    c, i = positive("sits")
    originals = list(zip(text_to_image, range(num_texts)))  # (image, caption)
    i2t = _lists(num_images, originals + list(zip(i, c)))
    t2i = _lists(num_texts, [(t, im) for im, t in originals] + list(zip(c, i)))
    a, b = positive("sts")
    captions_of = _lists(num_images, originals)
    co = [(t, int(u)) for t in range(num_texts) for u in captions_of[text_to_image[t]]]
    t2t = _lists(num_texts, co + list(zip(a, b)) + list(zip(b, a)))
    a, b = positive("sis")
    i2i = _lists(num_images, list(zip(a, b)) + list(zip(b, a)))
    # No self-retrieval: a query is never its own positive (positive_ranks also drops it).
    t2t = [p[p != q] for q, p in enumerate(t2t)]
    i2i = [p[p != q] for q, p in enumerate(i2i)]
    return {"i2t": i2t, "t2i": t2i, "t2t": t2t, "i2i": i2i}


def cxc_recalls(image_emb, text_emb, text_to_image, pairs, ks=(1, 5, 10),
                block_size: int = 512) -> dict:
    """``{dir}_R@K`` for the four directions, with ``num_{dir}_queries`` / ``_dropped``."""
    positives = cxc_positives(text_to_image, len(image_emb), pairs)
    sets = {"i2t": (image_emb, text_emb, False), "t2i": (text_emb, image_emb, False),
            "t2t": (text_emb, text_emb, True), "i2i": (image_emb, image_emb, True)}
    out = {}
    for name in DIRECTIONS:
        queries, candidates, exclude_self = sets[name]
        out.update(recalls(name, positive_ranks(queries, candidates, positives[name],
                                                exclude_self, block_size), ks))
    return out


def table(metrics: dict, ks) -> str:
    """ALIGN's Table 2 layout: R@K ×100 for the four directions."""
    names = {"i2t": "Image→Text", "t2i": "Text→Image", "t2t": "Text→Text", "i2i": "Image→Image"}
    width = 7 * len(ks)
    head = "".join(f"{names[d]:^{width}}" for d in DIRECTIONS)
    sub = "".join(f"{f'R@{k}':>7}" for _ in DIRECTIONS for k in ks)
    row = "".join(f"{100 * metrics[f'{d}_R@{k}']:>7.1f}" for d in DIRECTIONS for k in ks)
    return "\n".join(["CxC retrieval, R@K ×100 (ALIGN Table 2)", head, sub, row])


@register_evaluator("cxc_retrieval")
class CxCRetrievalEvaluator:
    """CxC's four-way retrieval (module docstring), reported as the source's ``retrieval``."""

    needs = "cxc"
    report_as = "retrieval"
    defaults = {"recall_ks": "1,5,10", "block_size": 512}

    @classmethod
    def validate(cls, entry, where: str) -> None:
        check_ks_and(entry, where, "block_size", 1)

    @classmethod
    def from_config(cls, entry, data):
        return cls(data.retrieval(entry), parse_ks(entry.recall_ks), entry.block_size)

    def __init__(self, data, ks=(1, 5, 10), block_size: int = 512):
        self.data, self.ks, self.block_size = data, tuple(ks), block_size

    def run(self, encoder) -> dict:
        image_emb, text_emb = self.data.embeddings(encoder)
        out = cxc_recalls(image_emb, text_emb, self.data.text_to_image, self.data.pairs,
                          self.ks, self.block_size)
        out.update(num_images=float(len(image_emb)), num_captions=float(len(text_emb)))
        if getattr(self.data, "table", False):
            print("\n" + table(out, self.ks))  # after a progress line left open
        return out
