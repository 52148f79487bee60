"""Which attribute did a run learn? Colour and shape accuracy, and colour separation per tower.

Not a test: a diagnosis for runs that miss the held-out bar. A failed ``mling_tiny`` seed learns
shape and never colour (docs/multilingual.md): this prints, per run directory, the share of
seen-pair images whose predicted class has the right colour and the right shape (the exported
``zero_shot_classify``, class names in each of ``--languages``), and the mean cosine between
the image embeddings of circles of different colours and between "red circle" … "orange circle"
text embeddings (near 1: that tower ignores colour).

    python experiments/attribute_probe.py RUN [RUN ...] --languages=en,de,zh
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

from align_tf.data import languages, synthetic  # noqa: E402


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _off_diagonal_mean(vectors) -> float:
    sims = vectors @ vectors.T
    return float(sims[~np.eye(len(sims), dtype=bool)].mean())


def probe(run: str, codes, size: int = 48, per_pair: int = 8) -> str:
    module = tf.saved_model.load(os.path.join(run, "savedmodel"))
    classify = module.signatures["zero_shot_classify"]
    rng = np.random.default_rng(5)
    pairs = [p for p in synthetic.SEEN for _ in range(per_pair)]
    images = np.stack([synthetic.render(p, size, rng)[0] for p in pairs]).astype(np.float32) / 255
    out = []
    for code in codes:
        names = tf.constant([languages.phrase(code, p) for p in synthetic.CLASSES])
        probs = classify(images=tf.constant(images), class_names=names)["probabilities"]
        predicted = [synthetic.CLASSES[i] for i in probs.numpy().argmax(1)]
        colour = np.mean([a[0] == b[0] for a, b in zip(predicted, pairs)])
        shape = np.mean([a[1] == b[1] for a, b in zip(predicted, pairs)])
        out.append(f"{code}: colour {colour:.2f} shape {shape:.2f}")
    circles = [(c, "circle") for c in synthetic.COLOURS]
    drawn = np.stack([synthetic.render(p, size, rng)[0] for p in circles]).astype(np.float32) / 255
    image = module.signatures["image_embed"](images=tf.constant(drawn))
    image = _unit(next(iter(image.values())).numpy())
    text = module.signatures["text_embed"](texts=tf.constant([languages.phrase(codes[0], p)
                                                               for p in circles]))
    text = _unit(next(iter(text.values())).numpy())
    out.append(f"different-colour cosine: images {_off_diagonal_mean(image):.2f}, "
               f"{codes[0]} texts {_off_diagonal_mean(text):.2f}")
    return f"{run}\n  " + "\n  ".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories with savedmodel/")
    parser.add_argument("--languages", default="en", help="comma list of language codes")
    args = parser.parse_args()
    importlib.import_module("tensorflow_text")  # the exported tokenizer's ops
    codes = [c.strip() for c in args.languages.split(",") if c.strip()]
    for run in args.runs:
        print(probe(run, codes), flush=True)


if __name__ == "__main__":
    main()
