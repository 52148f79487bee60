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

import common  # experiments/common.py (also puts the repository on sys.path)


def make_config(seed: int, variant: str, args):
    """The default config, shortened, with noisier captions; ``variant`` is "plain" or "mod"."""
    c = common.short_default(seed, args)
    c.data.caption_noise = args.caption_noise
    c.objective.name = "contrastive" if variant == "plain" else "momentum_distillation"
    if variant == "mod_queue":
        c.objective.momentum_distillation.queue_size = args.queue_size
    if args.ramp_steps is not None:
        c.objective.momentum_distillation.alpha_ramp_steps = args.ramp_steps
    return c


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

    variants = args.variants.split(",")
    common.run_and_summarise(make_config, args, variants)


if __name__ == "__main__":
    main()
