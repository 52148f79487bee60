"""k-nearest-neighbour classification on frozen image embeddings (cosine similarity).

Each query takes its ``k`` most similar training embeddings; each neighbour votes for its label with
weight ``exp(similarity / temperature)`` (the weighted kNN of Wu et al. 2018 / DINO, temperature
0.07), or with weight 1 when ``temperature`` is None (plain majority vote). Class scores are the
summed votes; ties between classes go to the lower class index.
"""

from __future__ import annotations

import numpy as np

from align_tf.evaluation.registry import check_int, register_evaluator
from align_tf.evaluation.zero_shot import TOPK, label_ranks


def _normalize(x):
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def knn_scores(train_embeddings, train_labels, query_embeddings, k: int = 20,
               temperature: float | None = 0.07, num_classes: int | None = None,
               block_size: int = 1024) -> np.ndarray:
    """Summed neighbour votes per class, ``(N_query, num_classes)`` float32.

    Args:
      train_embeddings: ``(N_train, D)``; normalised here, so cosine similarity is used.
      train_labels: ``(N_train,)`` int labels.
      query_embeddings: ``(N_query, D)``.
      k: neighbours per query (capped at ``N_train``).
      temperature: vote weight ``exp(sim / temperature)``; None: every neighbour votes 1.
      num_classes: default ``max(train_labels) + 1``.
      block_size: queries scored at once (memory ``block_size × N_train`` floats), lowered so a
        block holds at most 2^26 similarities.
    """
    train = _normalize(train_embeddings)
    queries = _normalize(query_embeddings)
    train_labels = np.asarray(train_labels, np.int64)
    num_classes = int(num_classes or train_labels.max() + 1)
    k = min(k, len(train))
    out = np.zeros((len(queries), num_classes), np.float32)
    # At most ~64M similarities at once (256 MB): with ImageNet's 1.28M training embeddings a
    # block is ~50 queries, not block_size.
    block_size = max(1, min(block_size, (1 << 26) // max(1, len(train))))
    for start in range(0, len(queries), block_size):
        sims = queries[start:start + block_size] @ train.T  # (B, N_train)
        # argpartition is deterministic but not stable: among neighbours tied exactly at the k-th
        # similarity which ones are kept is up to numpy (it does not matter for real features).
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        near_sims = np.take_along_axis(sims, nearest, axis=1)
        weights = np.ones_like(near_sims) if temperature is None else np.exp(
            (near_sims - 1.0) / temperature)  # shifted by the max possible cosine: no overflow
        rows = np.repeat(np.arange(len(nearest)), k)
        np.add.at(out[start:start + block_size], (rows, train_labels[nearest].ravel()),
                  weights.ravel())
    return out


def knn_accuracy(train_embeddings, train_labels, query_embeddings, query_labels, k: int = 20,
                 temperature: float | None = 0.07, num_classes: int | None = None,
                 topk=(1, 5), block_size: int = 1024) -> dict:
    """Top-k accuracy (in [0, 1]) of the weighted kNN vote; see ``knn_scores``."""
    query_labels = np.asarray(query_labels, np.int64)
    if num_classes is None:
        num_classes = int(max(np.max(train_labels), np.max(query_labels)) + 1)
    scores = knn_scores(train_embeddings, train_labels, query_embeddings, k, temperature,
                        num_classes, block_size)
    ranks = label_ranks(scores, query_labels)
    return {f"top{t}": float(np.mean(ranks < t)) for t in topk if t <= num_classes}


@register_evaluator("knn")
class KnnEvaluator:
    """Named evaluator: kNN top-k accuracy of frozen image embeddings (train split → test split).

    Args:
      train_data, test_data: ``ClassificationData`` of one label space.
      k: neighbours; temperature: vote weighting (None: majority vote); topk: reported k's.

    Config entry (``type: knn``): ``defaults`` below; fits on the source's ``train_split``.
    """

    name = "knn"
    needs = "classification"
    defaults = {
        "knn_k": 20,               # neighbours
        "knn_temperature": 0.07,   # vote weight exp(similarity / T); 0: majority vote
    }

    @classmethod
    def validate(cls, entry, where: str) -> None:
        check_int(entry.knn_k, f"{where}.knn_k", 1)
        if not entry.knn_temperature >= 0:
            raise ValueError(f"{where}.knn_temperature must be >= 0 (0: majority vote), "
                             f"got {entry.knn_temperature!r}")

    @classmethod
    def from_config(cls, entry, data):
        return cls(data.classification(entry, train=True), data.classification(entry, train=False),
                   entry.knn_k, entry.knn_temperature or None, TOPK)

    def __init__(self, train_data, test_data, k: int = 20, temperature: float | None = 0.07,
                 topk=(1, 5)):
        self.train_data, self.test_data = train_data, test_data
        self.k, self.temperature, self.topk = k, temperature, tuple(topk)

    def run(self, encoder) -> dict:
        """``encoder``: an ``align_tf.evaluation.embed.Encoder``. Returns a flat dict of floats."""
        train_emb, train_labels = self.train_data.embed_images(encoder)
        test_emb, test_labels = self.test_data.embed_images(encoder)
        out = knn_accuracy(train_emb, train_labels, test_emb, test_labels, self.k,
                           self.temperature, num_classes=len(self.test_data.classnames),
                           topk=self.topk)
        out.update(num_neighbours=float(self.k), num_train=float(len(train_labels)),
                   num_examples=float(len(test_labels)))
        return out
