"""Per-language evaluation on the multilingual synthetic corpus (``data.synthetic_languages``).

Three evaluator types, each on ``dataset: synthetic``, each with ``languages`` ("all" or a comma
list of ``align_tf.data.languages`` codes); every metric is reported per language and as a
language-balanced ``mean`` (the plain mean over the languages, so no language weighs more):

* ``mling_zeroshot`` (reported as ``zeroshot``): the zero-shot test images, classified with each
  language's prompts (``prompts.multilingual_prompts``: the class name translated and agreeing)
  → ``results["synthetic"]["zeroshot"]["de"]["heldout_top1" | "seen_top1" | "top1" | ...]``;
* ``mling_retrieval`` (``retrieval``): galleries of one image per class, each image with
  ``captions_per_image`` clean captions per language → ``["retrieval"]["zh"]["i2t_R@1" | ...]``;
* ``mling_crosslingual`` (``crosslingual``): the same galleries; each caption in language A
  queries the gallery's captions in language B (``t2t_R@K``: one of the same image's B captions
  in the top K) → ``["crosslingual"]["de_zh"]["t2t_R@1"]`` (query language first), and
  ``["mean"]`` over the ordered pairs.

A runner report nests a metric named ``"de/top1"`` as ``{"de": {"top1": ...}}``
(``runner.make_report``); TensorBoard shows it as ``synthetic/zeroshot/de/top1``.
"""

from __future__ import annotations

import numpy as np

from align_tf.evaluation.registry import check_int, register_evaluator
from align_tf.evaluation.retrieval import parse_ks, recall_at_k
from align_tf.evaluation.zero_shot import TOPK, topk_accuracy

MEAN = "mean"


def parse_languages(value, where: str) -> tuple:
    """The codes of an entry's ``languages`` (one-line ``ValueError`` naming ``where``)."""
    from align_tf.data.sources.synthetic import parse_languages as parse
    codes = parse(value, where)
    if not codes:
        raise ValueError(f"{where} is empty: 'all' or a comma list of language codes")
    return codes


def with_mean(per_language: dict) -> dict:
    """``{"<lang>/<metric>": v}`` plus ``"mean/<metric>"``: the plain mean over the languages."""
    out = {f"{code}/{m}": v for code, metrics in per_language.items() for m, v in metrics.items()}
    for m in next(iter(per_language.values())):
        out[f"{MEAN}/{m}"] = float(np.mean([metrics[m] for metrics in per_language.values()]))
    return out


def language_class_embeddings(encoder, code: str) -> np.ndarray:
    """``(30, D)`` unit-norm class embeddings from language ``code``'s prompts (mean of each
    class's prompt embeddings, re-normalised, as ``zero_shot.class_embeddings``)."""
    from align_tf import prompts
    from align_tf.data import synthetic

    def compute():
        texts = [prompts.multilingual_prompts(code, pair) for pair in synthetic.CLASSES]
        emb = encoder.embed_texts([t for group in texts for t in group])
        emb = emb.reshape(len(texts), len(texts[0]), -1)
        emb = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
        mean = emb.mean(axis=1)
        return mean / np.linalg.norm(mean, axis=-1, keepdims=True)
    return encoder.memoize(("mling_classes", code), compute)


class _Languages:
    """What the three types share: the ``languages`` field and the ``synthetic`` dataset."""

    defaults = {"languages": "all"}

    @classmethod
    def accepts(cls, source, kinds) -> bool:
        return getattr(source, "name", "") == "synthetic"

    @classmethod
    def validate(cls, entry, where: str) -> None:
        parse_languages(entry.languages, f"{where}.languages")
        if "recall_ks" in entry:
            parse_ks(entry.recall_ks, f"{where}.recall_ks")
        if "captions_per_image" in entry:
            check_int(entry.captions_per_image, f"{where}.captions_per_image", 1)


@register_evaluator("mling_zeroshot")
class MultilingualZeroShot(_Languages):
    """Zero-shot top-k per language, on all classes and on the held-out / seen pairs."""

    needs = "classification"
    report_as = "zeroshot"

    @classmethod
    def from_config(cls, entry, data):
        return cls(data.classification(entry, train=False), data.source.groups(),
                   parse_languages(entry.languages, "languages"))

    def __init__(self, data, groups, languages):
        self.data, self.groups, self.languages = data, dict(groups or {}), tuple(languages)

    def run(self, encoder) -> dict:
        image_emb, labels = self.data.embed_images(encoder)
        per_language = {}
        for code in self.languages:
            class_emb = language_class_embeddings(encoder, code)
            metrics = topk_accuracy(image_emb, class_emb, labels, TOPK)
            for group, ids in self.groups.items():
                mask = np.isin(labels, np.asarray(list(ids)))
                for k, v in topk_accuracy(image_emb[mask], class_emb, labels[mask], TOPK).items():
                    metrics[f"{group}_{k}"] = v
            per_language[code] = metrics
        return dict(with_mean(per_language), num_examples=float(len(labels)),
                    num_languages=float(len(self.languages)))


def _galleries(encoder, entry, languages):
    """``(image embeddings, {code: caption embeddings}, text_to_image, gallery)`` of the
    multilingual retrieval galleries (``sources.synthetic.multilingual_retrieval``), embedded
    once per ``fixed_weights`` block."""
    from align_tf.data.sources import synthetic as source
    key = ("mling_galleries", entry.synthetic_retrieval_rounds, entry.captions_per_image,
           entry.synthetic_seed, languages, encoder.image_size)

    def compute():
        arrays = source.multilingual_retrieval(entry.synthetic_retrieval_rounds,
                                               entry.captions_per_image,
                                               entry.synthetic_seed + 2, encoder.image_size,
                                               languages)
        image_emb = encoder.embed_images(arrays["image"])
        text_emb = {code: encoder.embed_texts(list(arrays["captions"][code].reshape(-1)))
                    for code in languages}
        text_to_image = np.repeat(np.arange(len(image_emb)), entry.captions_per_image)
        return image_emb, text_emb, text_to_image, arrays["gallery"]
    return encoder.memoize(key, compute)


@register_evaluator("mling_retrieval")
class MultilingualRetrieval(_Languages):
    """Image↔text Recall@K per language, within galleries of one image per class."""

    needs = "retrieval"
    report_as = "retrieval"
    defaults = {"languages": "all", "recall_ks": "1,5,10", "captions_per_image": 5}

    @classmethod
    def from_config(cls, entry, data):
        return cls(entry, parse_languages(entry.languages, "languages"))

    def __init__(self, entry, languages):
        self.entry, self.languages = entry, tuple(languages)
        self.ks = parse_ks(entry.recall_ks)

    def run(self, encoder) -> dict:
        image_emb, text_emb, text_to_image, gallery = _galleries(encoder, self.entry,
                                                                 self.languages)
        per_language = {}
        for code in self.languages:
            metrics = recall_at_k(image_emb, text_emb[code], text_to_image, self.ks,
                                  galleries=gallery)
            per_language[code] = {m: v for m, v in metrics.items() if "_R@" in m}
        return dict(with_mean(per_language), num_images=float(len(image_emb)))


def text_to_text_ranks(queries, candidates, query_image, candidate_image, query_gallery,
                       candidate_gallery) -> np.ndarray:
    """0-based rank, for each query, of the best-ranked candidate of the same image among the
    candidates of its gallery (ties broken by index, as ``retrieval.image_to_text_ranks``)."""
    ranks = np.empty(len(queries), np.int64)
    for g in np.unique(query_gallery):
        q, c = np.flatnonzero(query_gallery == g), np.flatnonzero(candidate_gallery == g)
        scores = queries[q] @ candidates[c].T
        own = query_image[q][:, None] == candidate_image[c][None, :]
        best = np.where(own, scores, -np.inf).max(axis=1, keepdims=True)
        first = np.argmax(own & (scores == best), axis=1)[:, None]
        ranks[q] = ((scores > best).sum(axis=1)
                    + ((scores == best) & (np.arange(len(c))[None, :] < first)).sum(axis=1))
    return ranks


@register_evaluator("mling_crosslingual")
class CrossLingual(MultilingualRetrieval):
    """Cross-lingual retrieval: captions in A query captions in B (module docstring)."""

    report_as = "crosslingual"

    def run(self, encoder) -> dict:
        _, text_emb, text_to_image, gallery = _galleries(encoder, self.entry, self.languages)
        text_gallery = gallery[text_to_image]
        per_pair = {}
        for a in self.languages:
            for b in self.languages:
                if a == b:
                    continue
                ranks = text_to_text_ranks(text_emb[a], text_emb[b], text_to_image,
                                           text_to_image, text_gallery, text_gallery)
                per_pair[f"{a}_{b}"] = {f"t2t_R@{k}": float(np.mean(ranks < k))
                                        for k in self.ks}
        return dict(with_mean(per_pair), num_pairs=float(len(per_pair)))
