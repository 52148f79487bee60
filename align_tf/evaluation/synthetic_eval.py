"""Evaluation of the embedded default on fresh synthetic images.

Reports zero-shot classification over all colour×shape classes (prompt ensemble), separately for
pairs never seen together in training (``heldout``) and seen pairs, and image↔text Recall@K on sets
with one image per class.
"""

from __future__ import annotations

import numpy as np

from align_tf.data import synthetic
from align_tf.evaluation import retrieval, zero_shot
from align_tf.evaluation.embed import embed_images, embed_texts


def evaluate_synthetic(model, preprocessor, image_size: int, num_per_class: int = 40,
                       retrieval_rounds: int = 4, seed: int = 10_000) -> dict:
    """Returns a dict of metrics (accuracies in [0, 1]) for a trained model on the synthetic task."""
    def embed_text(texts):
        return embed_texts(model, preprocessor, texts)

    classnames = [synthetic.class_name(p) for p in synthetic.CLASSES]
    class_emb = zero_shot.class_embeddings(embed_text, classnames, synthetic.PROMPTS)
    results = {"num_classes": len(classnames), "chance": 1.0 / len(classnames),
               "heldout_pairs": [synthetic.class_name(p) for p in synthetic.HELD_OUT]}
    for split, pairs in (("heldout", synthetic.HELD_OUT), ("seen", synthetic.SEEN)):
        data = synthetic.make_pairs(num_per_class * len(pairs), image_size, pairs, noise=0.0, partial=0.0,
                                    seed=seed + len(pairs))
        acc = zero_shot.accuracy(embed_images(model, data["image"], image_size), class_emb,
                                 data["label"], topk=(1, 5))
        results[f"zero_shot_{split}_top1"] = acc["top1"]
        results[f"zero_shot_{split}_top5"] = acc["top5"]

    rounds = []
    for r in range(retrieval_rounds):
        rng = np.random.default_rng(seed + 100 + r)
        images, captions = [], []
        for pair in synthetic.CLASSES:
            image, frac, bg = synthetic.render(pair, image_size, rng)
            images.append(image)
            captions.append(synthetic.caption(pair, frac, bg, rng, noise=0.0, partial=0.0))
        rounds.append(retrieval.recall_at_k(embed_images(model, np.stack(images), image_size),
                                            embed_text(captions), ks=(1, 5)))
    for key in rounds[0]:
        results[f"retrieval_{key}"] = float(np.mean([r[key] for r in rounds]))
    results["temperature"] = float(model.temperature.numpy())
    return results
