"""SITS / STS / SIS: Spearman's R between the model's cosine similarity of rated pairs and the
human ``agg_score`` (CxC, Parekh et al., EACL 2021; ALIGN's Table 3 reports it ×100).

Two figures per task:

* ``{task}_spearman``: the full-set Spearman's R (Pearson correlation of the average-tie ranks),
  deterministic: the figure tests and comparisons use.
* ``{task}_bootstrap_mean`` / ``{task}_bootstrap_std``: the paper's "Spearman's R bootstrap
  correlation, avg ± std". Protocol: the resampling unit is the rated pair; ``bootstrap_samples``
  resamples (default 1000), each of ``bootstrap_size`` pairs (0: as many as the set has) drawn
  uniformly with replacement, all at once as ``np.random.default_rng(bootstrap_seed).integers(0,
  n, (bootstrap_samples, size))`` (a fresh generator per task); the mean
  and the population standard deviation (``ddof=0``) of the resamples' Spearman's R. A resample
  whose scores or similarities are all tied has no R and is left out of the mean and std.

Data: ``cxc:DIR`` (its rated pairs over the Karpathy split's images and first 5 captions), or the
synthetic set (``data/synthetic_similarity.py``: ``similarity_pairs`` rated pairs per task over
the zero-shot test images and clean class captions, ground truth known).
"""

from __future__ import annotations

import numpy as np

from align_tf.evaluation.intra_modal import is_synthetic, synthetic_captions
from align_tf.evaluation.registry import check_int, register_evaluator

TASKS = ("sits", "sts", "sis")


def average_ranks(values) -> np.ndarray:
    """1-based ranks along the last axis, ties given their average rank (``scipy.stats.rankdata``'s
    ``average``)."""
    values = np.asarray(values, np.float64)
    order = np.argsort(values, axis=-1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=-1)
    n = values.shape[-1]
    position = np.broadcast_to(np.arange(n), values.shape)
    starts = np.concatenate([np.ones(values.shape[:-1] + (1,), bool),
                             ordered[..., 1:] != ordered[..., :-1]], axis=-1)
    ends = np.concatenate([ordered[..., 1:] != ordered[..., :-1],
                           np.ones(values.shape[:-1] + (1,), bool)], axis=-1)
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=-1)
    last = np.flip(np.minimum.accumulate(np.flip(np.where(ends, position, n), -1), axis=-1), -1)
    ranks = np.empty_like(values)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=-1)
    return ranks


def spearman(x, y) -> np.ndarray:
    """Spearman's R of ``x`` and ``y`` along the last axis (NaN where either is constant)."""
    rx, ry = average_ranks(x), average_ranks(y)
    rx = rx - rx.mean(axis=-1, keepdims=True)
    ry = ry - ry.mean(axis=-1, keepdims=True)
    norm = np.sqrt((rx * rx).sum(axis=-1) * (ry * ry).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (rx * ry).sum(axis=-1) / np.where(norm > 0, norm, 1), np.nan)


def correlations(task: str, similarity, score, samples: int = 1000, size: int = 0,
                 seed: int = 0) -> dict:
    """``{task}_spearman`` and the bootstrap's ``{task}_bootstrap_mean`` / ``_std`` (module
    docstring), plus ``num_{task}_pairs``."""
    similarity, score = np.asarray(similarity, np.float64), np.asarray(score, np.float64)
    n = len(score)
    out = {f"{task}_spearman": float(spearman(similarity, score)) if n > 1 else float("nan")}
    if samples and n > 1:
        index = np.random.default_rng(seed).integers(0, n, (samples, size or n))
        boot = spearman(similarity[index], score[index])
        boot = boot[np.isfinite(boot)]
        out[f"{task}_bootstrap_mean"] = float(boot.mean()) if len(boot) else float("nan")
        out[f"{task}_bootstrap_std"] = float(boot.std()) if len(boot) else float("nan")
    out[f"num_{task}_pairs"] = float(n)
    return out


def pair_similarities(pairs: dict, image_emb, text_emb) -> dict:
    """``{task: (cosine similarities, scores)}`` of rated pairs (``(first, second, score)``;
    sits: caption, image; sts: caption, caption; sis: image, image)."""
    # float64: cosines of near-identical items then order the same on every machine.
    image_emb, text_emb = np.asarray(image_emb, np.float64), np.asarray(text_emb, np.float64)
    sides = {"sits": (text_emb, image_emb), "sts": (text_emb, text_emb),
             "sis": (image_emb, image_emb)}
    out = {}
    for task in TASKS:
        first, second, score = pairs[task]
        a, b = sides[task]
        out[task] = (np.sum(a[first] * b[second], axis=1), score)
    return out


def table(metrics: dict) -> str:
    """ALIGN's Table 3 layout: Spearman's R bootstrap ×100, avg ± std, and the full-set R."""
    cols = ("sts", "sis", "sits")
    boot = [f"{100 * metrics[f'{t}_bootstrap_mean']:.1f} ± "
            f"{100 * metrics[f'{t}_bootstrap_std']:.1f}" for t in cols]
    full = [f"{100 * metrics[f'{t}_spearman']:.1f}" for t in cols]
    mean = np.mean([metrics[f"{t}_bootstrap_mean"] for t in cols]) * 100
    return "\n".join([
        "CxC semantic similarity, Spearman's R ×100 (ALIGN Table 3)",
        f"{'':14}{'STS':>14}{'SIS':>14}{'SITS':>14}{'Mean Avg':>10}",
        f"{'bootstrap':14}" + "".join(f"{b:>14}" for b in boot) + f"{mean:>10.1f}",
        f"{'full set':14}" + "".join(f"{f:>14}" for f in full)])


@register_evaluator("correlation")
class CorrelationEvaluator:
    """SITS / STS / SIS Spearman's R on ``cxc:DIR`` or the synthetic set (module docstring)."""

    needs = "similarity ratings"
    defaults = {"bootstrap_samples": 1000,  # resamples (0: no bootstrap)
                "bootstrap_size": 0,        # pairs per resample; 0: the set's size
                "bootstrap_seed": 0,
                "similarity_pairs": 400}    # synthetic: rated pairs per task

    @classmethod
    def accepts(cls, source, kinds) -> bool:
        from align_tf.data.sources.cxc import CXC
        return CXC in kinds or is_synthetic(source)

    @classmethod
    def validate(cls, entry, where: str) -> None:
        check_int(entry.bootstrap_samples, f"{where}.bootstrap_samples", 0)
        check_int(entry.bootstrap_size, f"{where}.bootstrap_size", 0)
        check_int(entry.bootstrap_seed, f"{where}.bootstrap_seed", 0)
        check_int(entry.similarity_pairs, f"{where}.similarity_pairs", 4)

    @classmethod
    def from_config(cls, entry, data):
        bootstrap = (entry.bootstrap_samples, entry.bootstrap_size, entry.bootstrap_seed)
        if is_synthetic(data.source):
            return SyntheticCorrelation(data.classification(entry, False), bootstrap,
                                        entry.similarity_pairs, entry.synthetic_seed)
        return cls(data.retrieval(entry), bootstrap)

    def __init__(self, data, bootstrap=(1000, 0, 0)):
        self.data, self.bootstrap = data, tuple(bootstrap)

    def embeddings_and_pairs(self, encoder) -> tuple:
        image_emb, text_emb = self.data.embeddings(encoder)
        return image_emb, text_emb, self.data.pairs

    def run(self, encoder) -> dict:
        image_emb, text_emb, pairs = self.embeddings_and_pairs(encoder)
        out = {}
        for task, (sim, score) in pair_similarities(pairs, image_emb, text_emb).items():
            out.update(correlations(task, sim, score, *self.bootstrap))
        for task, skipped in (getattr(self.data, "num_skipped", None) or {}).items():
            out[f"num_{task}_skipped_pairs"] = float(skipped)
        if getattr(self.data, "table", False):
            print("\n" + table(out))  # after a progress line left open
        return out


class SyntheticCorrelation(CorrelationEvaluator):
    """SITS / STS / SIS on the synthetic zero-shot images and class captions."""

    def __init__(self, images, bootstrap=(1000, 0, 0), num_pairs: int = 400, seed: int = 0):
        super().__init__(images, bootstrap)
        self.num_pairs, self.seed, self._pairs = num_pairs, seed, {}

    def embeddings_and_pairs(self, encoder) -> tuple:
        from align_tf.data import synthetic_similarity
        from align_tf.evaluation.intra_modal import IntraModalEvaluator
        image_emb, labels = self.data.embed_images(encoder)
        # The captions text→text ranks (intramodal's default count): embedded once for both.
        text_emb, text_labels = synthetic_captions(
            encoder, IntraModalEvaluator.defaults["captions_per_class"], self.seed + 3)
        key = (labels.tobytes(), text_labels.tobytes())
        if key not in self._pairs:  # the same labels every evaluation: drawn once
            self._pairs = {key: synthetic_similarity.rated_pairs(labels, text_labels,
                                                                 self.num_pairs, self.seed + 4)}
        return image_emb, text_emb, self._pairs[key]
