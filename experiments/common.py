"""What every experiment here shares: train + evaluate one config per (variant, seed), keep the
results in ``{out_dir}/results.json`` (rewritten after every run, so an interrupted experiment
resumes where it stopped), and summarise them as Markdown (mean ± sd over seeds)."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from align_tf import trainer  # noqa: E402
from align_tf.configs import base  # noqa: E402
from align_tf.evaluation import runner  # noqa: E402

HELDOUT = "synthetic/zeroshot/heldout_top1"
METRICS = (HELDOUT, "synthetic/zeroshot/heldout_top5", "synthetic/zeroshot/seen_top1",
           "synthetic/retrieval/i2t_R@1", "synthetic/retrieval/t2i_R@1")
# The model's learned scale, whichever similarity it has (eval.json "model").
SCALES = ("temperature", "logit_scale", "logit_bias")


def short_default(seed: int, args, config=None):
    """``config`` (default: the embedded default) for one experiment run: ``args.steps`` long
    (checkpointed only at the end), ``args.eval_per_class`` zero-shot images per class,
    ``args.image_size`` if set."""
    c = config or base.get_config()
    c.seed = seed
    c.train.steps = args.steps
    c.train.checkpoint_every = args.steps
    c.eval.synthetic_examples_per_class = args.eval_per_class
    if getattr(args, "image_size", 0):
        c.data.image_size = args.image_size
    return c


def run(make_config: Callable[[int, str], object], variants: list[str], seeds: list[int],
        out_dir: str, args: dict | None = None, metrics_kept=METRICS) -> dict:
    """Trains and evaluates ``make_config(seed, variant)`` for every seed and variant not already
    in ``{out_dir}/results.json``; returns ``{variant: {seed: metrics}}`` (the flattened
    evaluation keys in ``metrics_kept``)."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "results.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    results.pop("args", None)
    for seed in seeds:
        for variant in variants:
            if str(seed) in results.get(variant, {}):
                continue  # resume an interrupted experiment
            config = make_config(seed, variant)
            model_dir = os.path.join(out_dir, f"{variant}_seed{seed}")
            start = time.time()
            result = trainer.train(config, model_dir, verbose=0)
            report = trainer.evaluate(result, config, model_dir)
            metrics = {k: v for k, v in runner.flatten(report["results"]).items()
                       if k in metrics_kept}
            metrics.update({k: report["model"][k] for k in SCALES
                            if report["model"].get(k) is not None})
            metrics["train_seconds"] = time.time() - start
            metrics["final_loss"] = result.metrics["loss"]
            results.setdefault(variant, {})[str(seed)] = metrics
            with open(path, "w") as f:
                json.dump({"args": args or {}, **results}, f, indent=2)
            print(f"seed {seed} {variant}: held-out top-1 {metrics[HELDOUT]:.3f} "
                  f"({metrics['train_seconds']:.0f}s)", flush=True)
    return results


def summarise(results: dict, variants: list[str], metrics=METRICS) -> str:
    """Markdown: mean ± sd over seeds per variant (a metric a variant lacks: —), then the per-seed
    held-out accuracies."""
    variants = [v for v in variants if v in results]
    lines = ["| variant | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for v in variants:
        cells = []
        for m in metrics:
            if any(m not in r for r in results[v].values()):
                cells.append("—")
                continue
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


def run_and_summarise(make_config, args, variants: list[str], metrics=METRICS) -> dict:
    """``run`` over ``args.seeds`` into ``args.out_dir`` (``make_config(seed, variant, args)``),
    then prints ``summarise``."""
    results = run(lambda seed, variant: make_config(seed, variant, args), variants,
                  [int(s) for s in args.seeds.split(",")], args.out_dir, vars(args),
                  metrics_kept=tuple(dict.fromkeys(tuple(metrics) + METRICS)))
    print(summarise(results, variants, metrics))
    return results
