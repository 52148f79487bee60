"""ITM re-ranking (ALBEF §3.3 / its retrieval evaluation): the ITC top-K, re-scored by the fusion
encoder's image-text matching head.

Scoring every (image, text) pair with the fusion encoder costs a cross-attention pass per pair, so
ALBEF ranks all candidates by the cheap unimodal (ITC) similarity first and re-scores only each
query's top K (K = 128 / 256 in ALBEF) with ITM. Image tokens and text states are computed once
per image / caption and cached; only the fusion layers and the head run per pair.

Ranking rule (``rerank_ranks``): a query's top K candidates by ITC score (ties: lower index first)
are re-ordered by ITM score (ties: ITC order); every other candidate keeps its ITC position
behind them. So a positive outside the ITC top K keeps its ITC rank (≥ K), and R@K for any K is
never computed from ITM scores of pairs ITC did not shortlist.

The ITM score is the raw "match" logit ``itm_head(...)[:, 1]``, as ALBEF's ``Retrieval.py`` ranks.
``match_score="probability"`` ranks by softmax(logits)[:, 1] instead, which orders pairs
differently: logits (0, 2) outrank (-5, 1) by the logit, but not by p (0.881 < 0.9975).

Re-ranking needs the model in memory (``--model_dir``): through a SavedModel it would re-run both
towers for every pair, so ``python -m align_tf.evaluate --savedmodel`` refuses ``--rerank_k``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from align_tf.evaluation.embed import Encoder, KerasEncoder


def rerank_ranks(itc_scores, positives, k: int, match_scores) -> np.ndarray:
    """0-based rank of each query's first positive after ITM re-ranking of its ITC top ``k``.

    Args:
      itc_scores: ``(Q, C)`` unimodal similarities.
      positives: ``(Q, C)`` bool, the candidates that count as hits (every query has one).
      k: how many of the ITC best candidates are re-scored.
      match_scores: ``f(query_index (P,), candidate_index (P,)) -> (P,)`` ITM scores of pairs.

    Returns:
      ``(Q,)`` int64 ranks (rank < K: a hit at Recall@K).
    """
    itc_scores = np.asarray(itc_scores, np.float32)
    positives = np.asarray(positives, bool)
    num_queries, num_candidates = itc_scores.shape
    k = min(int(k), num_candidates)
    order = np.argsort(-itc_scores, axis=1, kind="stable")  # ties: lower index first
    top = order[:, :k]
    queries = np.repeat(np.arange(num_queries), k)
    scores = np.asarray(match_scores(queries, top.reshape(-1)), np.float32).reshape(
        num_queries, k)
    reranked = np.take_along_axis(top, np.argsort(-scores, axis=1, kind="stable"), axis=1)
    full = np.concatenate([reranked, order[:, k:]], axis=1)
    hits = np.take_along_axis(positives, full, axis=1)
    if not hits.any(axis=1).all():
        raise ValueError("every query needs at least one positive candidate")
    return np.argmax(hits, axis=1).astype(np.int64)


MATCH_SCORES = ("logit", "probability")


def _match_score(logits, match_score: str):
    """The ITM score of ``(P, 2)`` ("no match", "match") logits: the match logit (ALBEF) or
    P(match)."""
    if match_score == "logit":
        return logits[:, 1]
    return tf.nn.softmax(logits, axis=-1)[:, 1]


def check_match_score(match_score: str) -> str:
    if match_score not in MATCH_SCORES:
        raise ValueError(f"match_score must be one of {MATCH_SCORES}, not {match_score!r}")
    return match_score


class MatchScorer(Encoder):
    """An ``Encoder`` over an ALBEF model that also keeps what ITM needs.

    Embedding images through it caches their image tokens (``image_tokens``, in embedding order);
    ``text_features`` gives text states and masks; ``match`` scores row-paired tokens and states.

    Args:
      encoder: a ``KerasEncoder`` whose model has a ``fusion`` part.
      match_score: "logit" (the raw ITM match logit, ALBEF's ranking) or "probability"
        (softmax(logits)[:, 1]).
    """

    def __init__(self, encoder, match_score: str = "logit"):
        self.match_score = check_match_score(match_score)
        if not isinstance(encoder, KerasEncoder):
            raise ValueError("ITM re-ranking needs the model in memory (--model_dir); with a "
                             "SavedModel it would re-run both towers for every pair")
        model = encoder.model
        if getattr(model, "fusion", None) is None:
            raise ValueError("ITM re-ranking needs an ALBEF model (model.fusion_layers > 0)")
        self.inner, self.model, self.preprocessor = encoder, model, encoder.preprocessor
        self.image_size, self.resize_size = encoder.image_size, encoder.resize_size
        self.batch_size = encoder.batch_size
        self.image_tokens = []
        fusion = model.fusion
        self._image_fn = tf.function(lambda pixels: fusion.encode_image(pixels), input_signature=[
            tf.TensorSpec([None, self.image_size, self.image_size, 3], tf.float32)])

        def text(texts):
            tokens = self.preprocessor(texts)
            emb, states = fusion.encode_text(tokens)
            return emb, states, tokens["padding_mask"]

        self._text_fn = tf.function(text, input_signature=[tf.TensorSpec([None], tf.string)])
        self._match_fn = tf.function(
            lambda states, masks, tokens: _match_score(
                fusion.match_logits(states, masks, tokens), self.match_score))

    def embed_image_batch(self, pixels) -> np.ndarray:
        emb, tokens = self._image_fn(tf.convert_to_tensor(pixels, tf.float32))
        self.image_tokens.append(tokens.numpy())
        return emb.numpy()

    def embed_text_batch(self, texts) -> np.ndarray:
        return self._text_fn(tf.convert_to_tensor(texts, tf.string))[0].numpy()

    def take_image_tokens(self) -> np.ndarray:
        """The cached image tokens of everything embedded since the last call, ``(N, P, H)``."""
        tokens, self.image_tokens = self.image_tokens, []
        return np.concatenate(tokens) if tokens else np.zeros((0, 0, 0), np.float32)

    def text_features(self, texts) -> tuple:
        """``(embeddings (N, D), states (N, T, H), padding masks (N, T))`` of a list of strings."""
        texts = [t.decode() if isinstance(t, bytes) else str(t) for t in texts]
        parts = [self._text_fn(tf.constant(texts[s:s + self.batch_size], tf.string))
                 for s in range(0, len(texts), self.batch_size)]
        return tuple(np.concatenate([p[i].numpy() for p in parts]) for i in range(3))

    def match(self, image_tokens, states, masks) -> np.ndarray:
        """ITM scores (``match_score``: match logit or P(match)) of row-paired ``(P, N, H)``
        image tokens and ``(P, T, H)`` text states."""
        out = [self._match_fn(tf.constant(states[s:s + self.batch_size]),
                              tf.constant(masks[s:s + self.batch_size]),
                              tf.constant(image_tokens[s:s + self.batch_size])).numpy()
               for s in range(0, len(states), self.batch_size)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def info(self) -> dict:
        return self.inner.info()
