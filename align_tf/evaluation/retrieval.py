"""Zero-shot image↔text retrieval Recall@K (paper §5.1 protocol).

Image→text counts a hit if *any* caption of the image is in the top K; text→image counts a hit if
the caption's image is in the top K.
"""

from __future__ import annotations

import numpy as np


def recall_at_k(image_embeddings, text_embeddings, text_to_image=None, ks=(1, 5, 10)) -> dict:
    """Recall@K both ways.

    Args:
      image_embeddings: ``(N_img, D)`` unit-norm.
      text_embeddings: ``(N_txt, D)`` unit-norm.
      text_to_image: ``(N_txt,)`` index of each caption's image; default ``arange`` (one caption each).
      ks: the K values.
    """
    image_embeddings = np.asarray(image_embeddings, np.float32)
    text_embeddings = np.asarray(text_embeddings, np.float32)
    if text_to_image is None:
        text_to_image = np.arange(len(text_embeddings))
    text_to_image = np.asarray(text_to_image)
    sim = image_embeddings @ text_embeddings.T  # (N_img, N_txt)
    out = {}
    # text→image: rank of the true image among all images for each caption.
    true_t2i = sim[text_to_image, np.arange(len(text_to_image))]
    rank_t2i = (sim > true_t2i[None, :]).sum(axis=0)
    # image→text: best rank over the image's captions.
    rank_i2t = np.full(len(image_embeddings), np.inf)
    for t, i in enumerate(text_to_image):
        rank = (sim[i] > sim[i, t]).sum()
        rank_i2t[i] = min(rank_i2t[i], rank)
    for k in ks:
        out[f"i2t_R@{k}"] = float(np.mean(rank_i2t < k))
        out[f"t2i_R@{k}"] = float(np.mean(rank_t2i < k))
    return out
