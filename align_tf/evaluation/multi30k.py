"""Multi30K retrieval per language (ALIGN §8, Table 11): for each of en, de, fr, cs, Recall@K both
ways between the 1,000 test images and that language's captions alone, and mR, the mean of
R@1/5/10 in both directions.

Reported as the source's ``retrieval``: ``results["multi30k"]["retrieval"]["de_mR"]``,
``["de_i2t_R@1"]``, ``["de_t2i_R@10"]``, ... (fractions in [0, 1]).
"""

from __future__ import annotations

import numpy as np

from align_tf.evaluation.registry import check_int, register_evaluator
from align_tf.evaluation.retrieval import parse_ks, recall_at_k

MR_KS = (1, 5, 10)  # mR averages these recalls, both ways (Table 11)


def per_language(image_emb, text_emb, text_to_image, caption_languages, ks=MR_KS,
                 block_size: int = 512) -> dict:
    """``{"<lang>_i2t_R@K", "<lang>_t2i_R@K", "<lang>_mR"}``; ``caption_languages``: the
    language of each caption (``text_emb``'s rows)."""
    caption_languages = np.asarray(caption_languages)
    out = {}
    for language in dict.fromkeys(caption_languages.tolist()):
        rows = caption_languages == language
        metrics = recall_at_k(image_emb, text_emb[rows], text_to_image[rows], ks, block_size)
        for d in ("i2t", "t2i"):
            for k in ks:
                out[f"{language}_{d}_R@{k}"] = metrics[f"{d}_R@{k}"]
        if set(MR_KS) <= set(ks):
            out[f"{language}_mR"] = float(np.mean(
                [metrics[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in MR_KS]))
    return out


@register_evaluator("multi30k_retrieval")
class Multi30kRetrievalEvaluator:
    """Per-language retrieval on ``multi30k:DIR`` (module docstring)."""

    needs = "multi30k"  # the kind sources/multi30k.py yields (not imported: --help loads no TF)
    report_as = "retrieval"
    defaults = {"recall_ks": "1,5,10", "block_size": 512}

    @classmethod
    def validate(cls, entry, where: str) -> None:
        parse_ks(entry.recall_ks, f"{where}.recall_ks")
        check_int(entry.block_size, f"{where}.block_size", 1)

    @classmethod
    def from_config(cls, entry, data):
        return cls(data.retrieval(entry), parse_ks(entry.recall_ks), entry.block_size)

    def __init__(self, data, ks=MR_KS, block_size: int = 512):
        self.data, self.ks, self.block_size = data, tuple(ks), block_size

    def run(self, encoder) -> dict:
        image_emb, captions, text_to_image, _ = self.data.embed_images(encoder)
        languages = np.tile(self.data.caption_languages, len(image_emb))
        out = per_language(image_emb, encoder.embed_texts(captions), text_to_image, languages,
                           self.ks, self.block_size)
        out.update(num_images=float(len(image_emb)), num_captions=float(len(captions)))
        return out
