"""Plain ALIGN loss vs momentum distillation (ALBEF's ITC-MoD) on heavily noisy synthetic captions.

Not a test: trains the embedded default (tiny EfficientNet + BERT on the synthetic shapes corpus)
with ``data.caption_noise`` raised (40% junk captions by default) for a few seeds, once with the
plain loss and once with ``objective.name=momentum_distillation``, then evaluates zero-shot accuracy on the
held-out (colour, shape) pairs. Both variants of a seed share the data, the initial towers and the
batch order. Results go to ``{out_dir}/results.json`` (updated after every run, so a partial run
keeps its numbers) and a Markdown table is printed.

    python experiments/mod_vs_plain.py --seeds=0,1,2 --steps=600 --out_dir=/tmp/mod_vs_plain
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from align_tf import trainer
from align_tf.configs import base
from align_tf.evaluation import runner

HELDOUT = "synthetic/zeroshot/heldout_top1"
METRICS = (HELDOUT, "synthetic/zeroshot/heldout_top5", "synthetic/zeroshot/seen_top1",
           "synthetic/retrieval/i2t_R@1", "synthetic/retrieval/t2i_R@1")


def make_config(seed: int, variant: str, args):
    """The default config, shortened, with noisier captions; ``variant`` is "plain" or "mod"."""
    c = base.get_config()
    c.seed = seed
    c.data.caption_noise = args.caption_noise
    c.train.steps = args.steps
    c.train.checkpoint_every = args.steps  # checkpoints only at the end
    c.eval.synthetic_examples_per_class = args.eval_per_class
    if args.image_size:
        c.data.image_size = args.image_size
    c.objective.name = "contrastive" if variant == "plain" else "momentum_distillation"
    if variant == "mod_queue":
        c.objective.queue_size = args.queue_size
    if args.ramp_steps is not None:
        c.objective.alpha_ramp_steps = args.ramp_steps
    return c


def summarise(results: dict) -> str:
    """Markdown table: mean ± std over seeds per variant, then the per-seed held-out accuracies."""
    variants = [v for v in ("plain", "mod", "mod_queue") if v in results]
    lines = ["| variant | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for v in variants:
        cells = []
        for m in METRICS:
            xs = np.array([r[m] for r in results[v].values()])
            cells.append(f"{xs.mean():.3f} ± {xs.std(ddof=1) if len(xs) > 1 else 0.0:.3f}")
        lines.append(f"| {v} (n={len(results[v])}) | " + " | ".join(cells) + " |")
    seeds = sorted({s for v in variants for s in results[v]}, key=int)
    lines += ["", "| seed | " + " | ".join(f"{v} held-out top-1" for v in variants) + " |",
              "|---" * (len(variants) + 1) + "|"]
    for s in seeds:
        lines.append(f"| {s} | " + " | ".join(
            f"{results[v][s][HELDOUT]:.3f}" if s in results[v] else "—"
            for v in variants) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default="plain,mod", help="plain, mod, mod_queue")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--caption_noise", type=float, default=0.4)
    parser.add_argument("--image_size", type=int, default=0, help="0: the config's")
    parser.add_argument("--ramp_steps", type=int, default=None, help="α ramp; default: config's")
    parser.add_argument("--queue_size", type=int, default=1024)
    parser.add_argument("--eval_per_class", type=int, default=40)
    parser.add_argument("--out_dir", default="/tmp/mod_vs_plain")
    args = parser.parse_args()

    os.makedirs(args.out_dir, exist_ok=True)
    path = os.path.join(args.out_dir, "results.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    results.pop("args", None)
    for seed in [int(s) for s in args.seeds.split(",")]:
        for variant in args.variants.split(","):
            if str(seed) in results.get(variant, {}):
                continue  # resume an interrupted experiment
            config = make_config(seed, variant, args)
            model_dir = os.path.join(args.out_dir, f"{variant}_seed{seed}")
            start = time.time()
            result = trainer.train(config, model_dir, verbose=0)
            report = trainer.evaluate(result, config, model_dir)
            metrics = runner.flatten(report["results"])
            metrics["temperature"] = report["model"]["temperature"]
            metrics["train_seconds"] = time.time() - start
            metrics["final_loss"] = result.metrics["loss"]
            results.setdefault(variant, {})[str(seed)] = {
                k: metrics[k] for k in METRICS + ("temperature", "train_seconds", "final_loss")}
            with open(path, "w") as f:
                json.dump({"args": vars(args), **results}, f, indent=2)
            print(f"seed {seed} {variant}: held-out top-1 {metrics[HELDOUT]:.3f} "
                  f"({metrics['train_seconds']:.0f}s)", flush=True)
    print(summarise(results))


if __name__ == "__main__":
    main()
