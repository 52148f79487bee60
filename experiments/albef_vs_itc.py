"""ITC alone vs ALBEF (ITC + ITM with hard negatives + MLM) on the synthetic compositional corpus.

Not a test: trains ``albef_tiny`` (the default towers, BERT split 2 text + 1 fusion layer) for a
few seeds, once with ITC alone (``objective.albef.itm_weight = mlm_weight = 0``: the same
ALBEF-exact ITC with momentum keys, queue and MoD) and once with the full ALBEF loss, then
evaluates on the synthetic set: zero-shot accuracy on the held-out (colour, shape) pairs and retrieval R@1, by
ITC and, for ALBEF, with each query's ITC top ``--rerank_k`` re-ranked by the ITM head (the
``rerank_*`` keys). Both variants of a seed share the data, the initial towers and the batch
order. Results go to ``{out_dir}/results.json`` (updated after every run) and a Markdown table is
printed.

    python experiments/albef_vs_itc.py --seeds=0,1,2 --steps=600 --out_dir=/tmp/albef_vs_itc
"""

from __future__ import annotations

import argparse

import common  # experiments/common.py (also puts the repository on sys.path)
from align_tf.configs import albef_tiny

ZS, RT = "synthetic/zeroshot/", "synthetic/retrieval/"
METRICS = tuple(f"{ZS}{p}{k}" for p in ("", "rerank_") for k in ("heldout_top1", "seen_top1")) \
    + tuple(f"{RT}{p}{k}" for p in ("", "rerank_") for k in ("i2t_R@1", "t2i_R@1"))


def make_config(seed: int, variant: str, args):
    """``albef_tiny``, shortened; ``variant`` is "itc" or "albef"."""
    c = common.short_default(seed, args, albef_tiny.get_config())
    c.export.enabled = False
    if variant == "itc":
        c.objective.albef.itm_weight = c.objective.albef.mlm_weight = 0.0
        c.eval.rerank_k = 0  # the fusion encoder is untrained: nothing to re-rank with
    else:
        c.eval.rerank_k = args.rerank_k
    return c


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default="itc,albef")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--rerank_k", type=int, default=5)
    parser.add_argument("--eval_per_class", type=int, default=40)
    parser.add_argument("--out_dir", default="/tmp/albef_vs_itc")
    args = parser.parse_args()

    variants = args.variants.split(",")
    common.run_and_summarise(make_config, args, variants, METRICS)


if __name__ == "__main__":
    main()
