"""Resuming the input stream: time to the first batch at a late step, next to today's ``skip()``.

    python benchmarks/bench_resume.py                     # step 1e6, batch 16384, 1e8 records
    python benchmarks/bench_resume.py --step=600000 --repeats=5 --output=resume.json

* ``ours``: ``sampling.indexed_dataset`` over a random-access synthetic source of ``--records``
  cheap records (index → a small int tensor; no images, so the figure is the sampling's alone),
  started at global batch ``--step`` of ``--batch`` examples: seconds from building the dataset to
  its first (global) batch, median of ``--repeats``.
* ``skip()``: the stream before index-based sampling, ``shuffle(buffer).repeat().skip(n)``, over
  the same source; its skip rate is measured over ``--skip_records`` and extrapolated to the
  ``step × batch`` examples a resume at ``--step`` skipped (a lower bound: real records also cost
  their parsing while skipped).
* checkpoint size: a training checkpoint (model, optimizer, objective state) of the embedded
  default config, which is all a resumed run needs (no input state); for reference, the same
  checkpoint with an iterator of the old pipeline (its shuffle buffer of default-size images),
  what checkpointing the input position would have cost instead.

Appends one row per figure to ``benchmarks/RESULTS.md`` (``--no_append`` skips it).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

import common  # noqa: E402  (also puts the repository on sys.path)
from align_tf.data import sampling  # noqa: E402


def lookup(record):
    """A cheap record: four int32 derived from its index."""
    return {"value": tf.fill([4], tf.cast(record % 1_000_003, tf.int32))}


def first_batch_seconds(records: int, step: int, batch: int, seed: int = 0) -> float:
    """Seconds from building the resumed dataset to its first batch of ``batch`` examples."""
    start = time.perf_counter()
    ds = sampling.indexed_dataset(lookup, records, seed, sampling.Layout(batch, batch), step)
    first = next(iter(ds.batch(batch)))
    assert int(first["position"][0]) == step * batch
    return time.perf_counter() - start


def old_skip_seconds(records: int, skip: int, buffer: int, seed: int = 0) -> float:
    """Seconds to the first element of the old stream after skipping ``skip`` examples."""
    start = time.perf_counter()
    ds = tf.data.Dataset.range(records).map(lookup).shuffle(buffer, seed=seed).repeat().skip(skip)
    next(iter(ds))
    return time.perf_counter() - start


def checkpoint_bytes(objects: dict) -> int:
    """Bytes of a ``tf.train.Checkpoint`` of ``objects`` (all of its files)."""
    with tempfile.TemporaryDirectory() as tmp:
        prefix = tf.train.Checkpoint(**objects).write(os.path.join(tmp, "ckpt"))
        directory, name = os.path.split(prefix)
        return sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory)
                   if f.startswith(name))


def checkpoint_sizes(buffer: int) -> dict:
    """A default-config training checkpoint, and the same with the old pipeline's iterator."""
    from align_tf import trainer
    from align_tf.configs import base
    config = base.get_config()
    _, objective = trainer.build(config, config.data.vocab_size)
    training = dict(model=objective.model, optimizer=objective.optimizer, objective=objective.state)
    side = config.data.image_size
    images = np.random.default_rng(0).integers(
        0, 256, (config.data.num_train_examples, side, side, 3), np.uint8)
    old = tf.data.Dataset.from_tensor_slices({"image": images, "caption": ["a caption"] *
                                              len(images)}).shuffle(buffer, seed=0).repeat()
    iterator = iter(old)
    next(iterator)  # the buffer is full once an element was produced
    return {"training": checkpoint_bytes(training),
            "old_iterator": checkpoint_bytes(dict(training, iterator=iterator)),
            "image_side": side}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10**8)
    parser.add_argument("--step", type=int, default=10**6)
    parser.add_argument("--batch", type=int, default=16384)
    parser.add_argument("--skip_records", type=int, default=10**6,
                        help="examples the old skip() is timed over")
    parser.add_argument("--shuffle_buffer", type=int, default=1024,
                        help="the old stream's buffer (the default config's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default="", help="also write the results as JSON here")
    parser.add_argument("--no_append", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)

    ours = common.summarize([first_batch_seconds(args.records, args.step, args.batch)
                             for _ in range(args.repeats)])
    zero = min(old_skip_seconds(args.records, 0, args.shuffle_buffer) for _ in range(args.repeats))
    skipping = min(old_skip_seconds(args.records, args.skip_records, args.shuffle_buffer)
                   for _ in range(args.repeats))
    rate = args.skip_records / max(skipping - zero, 1e-9)
    skipped = args.step * args.batch
    old = skipped / rate
    sizes = checkpoint_sizes(args.shuffle_buffer)
    mb = {k: sizes[k] / 2**20 for k in ("training", "old_iterator")}

    table = [["first batch at step {:.0e}".format(args.step), f"{ours['median']:.2f} s",
              f"{old:,.0f} s ({old / 3600:.1f} h)", common.fmt_ratio(old, ours["median"])],
             ["old skip() rate", "-", f"{rate:,.0f} examples/s", "-"],
             ["checkpoint without / with input state", f"{mb['training']:.2f} / "
              f"{mb['training']:.2f} MB", f"{mb['training']:.2f} / {mb['old_iterator']:.2f} MB",
              "-"]]
    print(common.markdown_table(["figure", "ours", "old skip()", "speed-up"], table))
    rows = [(f"first batch resuming at step {args.step:.0e} (position {skipped:.2e}), "
             f"{args.records:.0e} records", f"{ours['median']:.2f} s (median of {ours['n']})",
             f"{old:,.0f} s = {old / 3600:.1f} h (skip() extrapolated)",
             common.fmt_ratio(old, ours["median"])),
            (f"old skip() rate, shuffle({args.shuffle_buffer}).repeat().skip({args.skip_records})",
             "-", f"{rate:,.0f} examples/s", "-"),
            ("training checkpoint without / with input state (default config)",
             f"{mb['training']:.2f} / {mb['training']:.2f} MB: no input state needed",
             f"{mb['old_iterator']:.2f} MB with the old pipeline's iterator "
             f"(shuffle buffer of {args.shuffle_buffer} {sizes['image_side']} px pairs)", "-")]
    results = {"config": vars(args), "first_batch_s": ours, "old_skip_rate": rate,
               "old_extrapolated_s": old, "checkpoint_bytes": sizes}
    common.record("bench_resume.py", rows,
                  f"global batch {args.batch}, one input pipeline, cheap int records; old: "
                  f"skip rate over {args.skip_records:.0e} examples, min of {args.repeats}",
                  not args.no_append, args.output, results)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
