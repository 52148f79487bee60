"""Zero-shot classification with prompt ensembles (CLIP/ALIGN protocol).

Each class embedding is the mean of the L2-normalised embeddings of the class name in every
template, re-normalised (ALIGN §5.2 follows CLIP's ensembling).
"""

from __future__ import annotations

import numpy as np


def class_embeddings(embed_text, classnames, templates) -> np.ndarray:
    """``embed_text(list[str]) -> (N, D)``; returns ``(num_classes, D)`` unit-norm class embeddings."""
    texts = [t.format(name) for name in classnames for t in templates]
    emb = np.asarray(embed_text(texts)).reshape(len(classnames), len(templates), -1)
    emb = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
    mean = emb.mean(axis=1)
    return mean / np.linalg.norm(mean, axis=-1, keepdims=True)


def accuracy(image_embeddings, class_emb, labels, topk=(1,)) -> dict:
    """Top-k accuracy of nearest class embeddings by cosine similarity."""
    scores = np.asarray(image_embeddings) @ np.asarray(class_emb).T
    ranked = np.argsort(-scores, axis=1)
    labels = np.asarray(labels)[:, None]
    return {f"top{k}": float(np.mean(np.any(ranked[:, :k] == labels, axis=1))) for k in topk}
