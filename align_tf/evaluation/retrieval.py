"""Zero-shot image↔text retrieval: Recall@K and ranks (the MSCOCO 5K / Flickr30K 1K protocol).

Each image has several captions (5 in MSCOCO/Flickr30K). Image→text counts a hit at K if *any* of
the image's captions is among the K texts most similar to it; text→image counts a hit if the
caption's own image is among the K most similar images (ALIGN §5.1, following Karpathy & Fei-Fei).

Similarities are computed one block of queries at a time, so the 5k × 25k matrix of MSCOCO (or a
larger one) never exists at once: memory is ``block_size × num_candidates`` floats.

Ties are broken deterministically by index: among candidates with equal similarity the one with the
lower index ranks first (what a stable sort of the scores, descending, gives). A rank is therefore
``#{candidates scoring higher} + #{lower-indexed candidates scoring the same}``, 0-based.

Images may be split into galleries (``galleries=``): each query is then ranked among its own
gallery's candidates only, and R@K is over all queries (the synthetic set's rounds of one image per
class, which without galleries would hold look-alike images whose captions read alike).
"""

from __future__ import annotations

import numpy as np

from align_tf.evaluation.registry import check_int, register_evaluator


def _as_f32(x) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, np.float32))


def image_to_text_ranks(image_embeddings, text_embeddings, text_to_image,
                        block_size: int = 512) -> np.ndarray:
    """0-based rank of each image's best-ranked caption among all texts.

    Args:
      image_embeddings: ``(N_img, D)``.
      text_embeddings: ``(N_txt, D)``.
      text_to_image: ``(N_txt,)`` index of each caption's image.
      block_size: image queries scored at once (memory ``block_size × N_txt`` floats).

    Returns:
      ``(N_img,)`` int64 ranks; rank < K means a hit at Recall@K.
    """
    images, texts = _as_f32(image_embeddings), _as_f32(text_embeddings)
    text_to_image = np.asarray(text_to_image, np.int64)
    counts = np.bincount(text_to_image, minlength=len(images))
    if len(counts) > len(images) or np.any(counts == 0):
        raise ValueError("every image needs at least one caption and every caption a valid image "
                         f"index (captions per image: min {counts.min()}, images {len(images)})")
    text_index = np.arange(len(texts))
    ranks = np.empty(len(images), np.int64)
    for start in range(0, len(images), block_size):
        stop = min(start + block_size, len(images))
        scores = images[start:stop] @ texts.T  # (B, N_txt)
        own = text_to_image[None, :] == np.arange(start, stop)[:, None]
        best = np.where(own, scores, -np.inf).max(axis=1, keepdims=True)
        # The image's caption that a stable descending sort would put first: highest score, then
        # lowest index (argmax returns the first True).
        first = np.argmax(own & (scores == best), axis=1)[:, None]
        ranks[start:stop] = ((scores > best).sum(axis=1)
                             + ((scores == best) & (text_index[None, :] < first)).sum(axis=1))
    return ranks


def text_to_image_ranks(image_embeddings, text_embeddings, text_to_image,
                        block_size: int = 512) -> np.ndarray:
    """0-based rank of each caption's own image among all images (``(N_txt,)`` int64)."""
    images, texts = _as_f32(image_embeddings), _as_f32(text_embeddings)
    text_to_image = np.asarray(text_to_image, np.int64)
    image_index = np.arange(len(images))
    ranks = np.empty(len(texts), np.int64)
    for start in range(0, len(texts), block_size):
        stop = min(start + block_size, len(texts))
        scores = texts[start:stop] @ images.T  # (B, N_img)
        target = text_to_image[start:stop]
        true = scores[np.arange(stop - start), target][:, None]
        ranks[start:stop] = ((scores > true).sum(axis=1)
                             + ((scores == true) & (image_index[None, :] < target[:, None])).sum(axis=1))
    return ranks


def metrics_from_ranks(i2t_ranks, t2i_ranks, ks=(1, 5, 10)) -> dict:
    """``i2t_R@K``/``t2i_R@K`` in [0, 1], 1-based ``*_mean_rank`` and ``*_median_rank``."""
    out = {}
    for name, ranks in (("i2t", np.asarray(i2t_ranks)), ("t2i", np.asarray(t2i_ranks))):
        for k in ks:
            out[f"{name}_R@{k}"] = float(np.mean(ranks < k))
        out[f"{name}_mean_rank"] = float(np.mean(ranks) + 1)
        out[f"{name}_median_rank"] = float(np.median(ranks) + 1)
    return out


def _galleries(text_to_image, galleries, num_images):
    """Per gallery: ``(image indices, caption indices, each caption's image within the gallery)``.

    ``galleries`` (``(N_img,)`` ints, default one gallery) restricts every query to the
    candidates of its own gallery; a caption belongs to its image's gallery.
    """
    text_to_image = np.asarray(text_to_image, np.int64)
    galleries = (np.zeros(num_images, np.int64) if galleries is None
                 else np.asarray(galleries, np.int64))
    text_gallery = galleries[text_to_image]
    for gallery in np.unique(galleries):
        images = np.flatnonzero(galleries == gallery)
        texts = np.flatnonzero(text_gallery == gallery)
        yield images, texts, np.searchsorted(images, text_to_image[texts])


def recall_at_k(image_embeddings, text_embeddings, text_to_image=None, ks=(1, 5, 10),
                block_size: int = 512, galleries=None) -> dict:
    """Recall@K both ways, plus mean and median rank (exact, blocked, ties broken by index).

    Args:
      image_embeddings: ``(N_img, D)`` unit-norm.
      text_embeddings: ``(N_txt, D)`` unit-norm.
      text_to_image: ``(N_txt,)`` index of each caption's image; default ``arange`` (one caption
        per image).
      ks: the K values.
      block_size: queries scored at once.
      galleries: ``(N_img,)`` gallery of each image; a query is ranked among its own gallery's
        candidates only. Default: one gallery.

    Returns:
      ``{"i2t_R@1": ..., "t2i_R@1": ..., "i2t_mean_rank": ..., ...}``; recalls in [0, 1].
    """
    images, texts = _as_f32(image_embeddings), _as_f32(text_embeddings)
    if text_to_image is None:
        text_to_image = np.arange(len(texts))
    i2t, t2i = np.empty(len(images), np.int64), np.empty(len(texts), np.int64)
    for img, txt, local in _galleries(text_to_image, galleries, len(images)):
        i2t[img] = image_to_text_ranks(images[img], texts[txt], local, block_size)
        t2i[txt] = text_to_image_ranks(images[img], texts[txt], local, block_size)
    return metrics_from_ranks(i2t, t2i, ks)


def recall_at_k_faiss(image_embeddings, text_embeddings, text_to_image=None,
                      ks=(1, 5, 10), galleries=None) -> dict:
    """Recall@K both ways with exact faiss inner-product search (``faiss-cpu`` or ``faiss-gpu``).

    Only the top ``max(ks)`` neighbours are searched, so no ranks are reported; faiss orders
    exactly tied scores in its own way, so with ties this may differ from ``recall_at_k``.
    ``galleries`` as in ``recall_at_k``.
    """
    import faiss  # optional dependency

    images, texts = _as_f32(image_embeddings), _as_f32(text_embeddings)
    if text_to_image is None:
        text_to_image = np.arange(len(texts))
    kmax = max(ks)

    def first_hits(queries, candidates, is_hit):
        """Position of each query's first hit among its ``kmax`` nearest (``kmax``: none)."""
        index = faiss.IndexFlatIP(candidates.shape[1])
        index.add(candidates)
        _, nearest = index.search(queries, min(kmax, len(candidates)))
        hits = is_hit(nearest)
        return np.where(hits.any(axis=1), hits.argmax(axis=1), kmax)

    i2t, t2i = [], []
    for img, txt, local in _galleries(text_to_image, galleries, len(images)):
        own = np.arange(len(img))[:, None]
        i2t.append(first_hits(images[img], texts[txt], lambda n: local[n] == own))
        t2i.append(first_hits(texts[txt], images[img], lambda n: n == local[:, None]))
    i2t, t2i = np.concatenate(i2t), np.concatenate(t2i)
    out = {}
    for k in ks:
        out[f"i2t_R@{k}"] = float(np.mean(i2t < k))
        out[f"t2i_R@{k}"] = float(np.mean(t2i < k))
    return out


def parse_ks(value, where: str = "recall_ks") -> tuple:
    """Recall@K's K values from a comma list (string or sequence) of positive integers."""
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        ks = tuple(dict.fromkeys(int(str(k).strip()) for k in items if str(k).strip()))
    except ValueError:
        ks = ()
    if not ks or min(ks) < 1:
        raise ValueError(f"{where} must be positive integers, got {value!r}")
    return ks


@register_evaluator("retrieval")
class RetrievalEvaluator:
    """Named evaluator: embeds a captioned image set and reports Recall@K both ways.

    Args:
      data: a ``RetrievalData`` (images with several captions each, maybe in galleries).
      ks: the K values.
      block_size: queries scored at once.
      use_faiss: search with faiss (R@K only) instead of the exact blocked ranks.

    Config entry (``eval.evaluators.NAME``, ``type: retrieval``): ``defaults`` below; with
    ``rerank_k > 0`` (ALBEF models) it is ``RerankRetrievalEvaluator``, which also reports
    the ITC top-K re-ranked by the ITM head.
    """

    name = "retrieval"
    needs = "retrieval"
    defaults = {
        "recall_ks": "1,5,10",     # Recall@K values
        "captions_per_image": 5,   # captions kept per image (MSCOCO/Flickr30K: 5); 0: all
        "block_size": 512,         # queries scored at once (memory, not results)
        "faiss": False,            # R@K with faiss (no ranks reported)
        "rerank_k": 0,             # ALBEF: re-rank each query's ITC top-K with the ITM head; 0: off
    }

    @classmethod
    def validate(cls, entry, where: str) -> None:
        parse_ks(entry.recall_ks, f"{where}.recall_ks")
        check_int(entry.captions_per_image, f"{where}.captions_per_image", 0)
        check_int(entry.block_size, f"{where}.block_size", 1)
        check_int(entry.rerank_k, f"{where}.rerank_k", 0)
        if entry.rerank_k and entry.faiss:
            raise ValueError(f"{where}.rerank_k re-ranks the exact ITC ranking; it cannot be "
                             f"combined with {where}.faiss")

    @classmethod
    def from_config(cls, entry, data):
        ks = parse_ks(entry.recall_ks)
        if entry.rerank_k:
            return RerankRetrievalEvaluator(data.retrieval(entry), ks, entry.rerank_k,
                                            entry.block_size)
        return cls(data.retrieval(entry), ks, entry.block_size, entry.faiss)

    def __init__(self, data, ks=(1, 5, 10), block_size: int = 512, use_faiss: bool = False):
        self.data, self.ks, self.block_size, self.use_faiss = data, tuple(ks), block_size, use_faiss

    def run(self, encoder) -> dict:
        """``encoder``: an ``align_tf.evaluation.embed.Encoder``. Returns a flat dict of floats."""
        image_emb, captions, text_to_image, galleries = self.data.embed_images(encoder)
        text_emb = encoder.embed_texts(captions)
        if self.use_faiss:
            out = recall_at_k_faiss(image_emb, text_emb, text_to_image, self.ks, galleries)
        else:
            out = recall_at_k(image_emb, text_emb, text_to_image, self.ks, self.block_size,
                              galleries)
        out["num_images"] = float(len(image_emb))
        out["num_captions"] = float(len(text_emb))
        out["num_galleries"] = float(len(np.unique(galleries)))
        return out


class RerankRetrievalEvaluator:
    """Retrieval R@K with the ITC ranking (the same keys as ``retrieval``) and with the ITC top
    ``rerank_k`` re-ranked by ITM (``rerank_`` keys), on the same embeddings.

    Args:
      data: a ``RetrievalData``.
      ks: the K values.
      rerank_k: candidates per query re-scored by ITM.
      block_size: queries scored at once by the ITC ranking.
      match_score: what ITM ranks by, "logit" (ALBEF) or "probability" (``rerank.MatchScorer``).
    """

    name = "retrieval"

    def __init__(self, data, ks=(1, 5, 10), rerank_k: int = 16, block_size: int = 512,
                 match_score: str = "logit"):
        self.data, self.ks, self.rerank_k, self.block_size = data, tuple(ks), rerank_k, block_size
        from align_tf.evaluation import rerank  # TensorFlow: only for an ALBEF evaluation
        self.match_score = rerank.check_match_score(match_score)

    def run(self, encoder) -> dict:
        from align_tf.evaluation import rerank
        scorer = rerank.MatchScorer(encoder, self.match_score)
        image_emb, captions, text_to_image, galleries = self.data.embed_images(scorer)
        image_tokens = scorer.take_image_tokens()
        text_emb, states, masks = scorer.text_features(captions)
        out = recall_at_k(image_emb, text_emb, text_to_image, self.ks, self.block_size,
                                    galleries)
        i2t = np.empty(len(image_emb), np.int64)
        t2i = np.empty(len(text_emb), np.int64)
        for img, txt, local in _galleries(text_to_image, galleries, len(image_emb)):
            sim = image_emb[img] @ text_emb[txt].T
            own = local[None, :] == np.arange(len(img))[:, None]  # (images, captions)

            def i2t_scores(q, c):
                return scorer.match(image_tokens[img[q]], states[txt[c]], masks[txt[c]])

            def t2i_scores(q, c):
                return scorer.match(image_tokens[img[c]], states[txt[q]], masks[txt[q]])

            i2t[img] = rerank.rerank_ranks(sim, own, self.rerank_k, i2t_scores)
            t2i[txt] = rerank.rerank_ranks(sim.T, own.T, self.rerank_k, t2i_scores)
        reranked = metrics_from_ranks(i2t, t2i, self.ks)
        out.update({f"rerank_{key}": value for key, value in reranked.items()})
        out.update(rerank_k=float(self.rerank_k), num_images=float(len(image_emb)),
                   num_captions=float(len(text_emb)), num_galleries=float(len(np.unique(galleries))))
        return out
