"""SigLIP's sigmoid loss vs ALIGN's softmax loss by global batch, on the synthetic corpus.

Not a test: trains the embedded default (tiny EfficientNet + BERT on the synthetic shapes corpus)
for the same number of steps at each global batch (so a bigger batch also sees more pairs), once
with ``objective.name=contrastive`` (softmax, σ learned) and once with ``objective.name=sigmoid``
(t′ and b learned, SigLIP's init), for a few seeds, then evaluates zero-shot accuracy on seen and
held-out (colour, shape) pairs and retrieval. Both losses of a (seed, batch) share the data, the
initial towers and the batch order. The SigLIP paper (Zhai et al., 2023) finds sigmoid clearly
better than softmax below a batch of 16k. Results go to ``{out_dir}/results.json`` (resumable).

    python experiments/sigmoid_vs_softmax.py --seeds=0,1,2 --batches=16,64,256 --steps=600
    python experiments/sigmoid_vs_softmax.py --steps=400 --image_size=32 --eval_per_class=20  # cheaper
"""

from __future__ import annotations

import argparse

import common  # experiments/common.py (also puts the repository on sys.path)


def make_config(seed: int, variant: str, args):
    """The default config at ``variant`` = ``"{softmax|sigmoid}_b{batch}"``, ``args.steps`` long."""
    loss, batch = variant.split("_b")
    c = common.short_default(seed, args)
    c.train.batch_size = int(batch)
    c.objective.name = "sigmoid" if loss == "sigmoid" else "contrastive"
    c.model.similarity = "sigmoid" if loss == "sigmoid" else "softmax"
    return c


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--batches", default="16,64,256")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--image_size", type=int, default=0, help="0: the config's")
    parser.add_argument("--eval_per_class", type=int, default=40)
    parser.add_argument("--out_dir", default="/tmp/sigmoid_vs_softmax")
    args = parser.parse_args()

    variants = [f"{loss}_b{b}" for b in args.batches.split(",") for loss in ("softmax", "sigmoid")]
    common.run_and_summarise(make_config, args, variants)


if __name__ == "__main__":
    main()
