"""Where a training step's time goes: op time by kind (depthwise convolutions, squeeze-excitation,
attention, optimizer, ...), from a TensorFlow profiler trace of ``bench_train.py``'s step.

    python benchmarks/profile_train_step.py                  # B0 @ 128 + BERT-mini, batch 32
    python benchmarks/profile_train_step.py --bf16 --steps=3

Builds the step ``bench_train.py`` times (``bench_train.build_ours``: the contrastive objective's
``train_step``, AdamW, graph mode), runs ``--warmup`` steps, then traces ``--steps`` steps with
``tf.profiler.experimental`` and reads the trace (``*.xplane.pb``) directly. Each executed TF op's
time is put into the first matching category of ``CATEGORIES`` (by layer name, then op type);
forward and backward of a layer count together. Figures are op time summed over threads, per
step: with the 2 cores busy it exceeds the wall time, so shares are the robust figure. Appends one
row per category to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


import common  # noqa: E402  (also puts the repository on sys.path)

# (category, regular expression on "op name:op type"), first match wins.
CATEGORIES = (
    ("squeeze-excitation (pool, 1×1 convs, sigmoid, scale)", r"_se_"),
    ("attention (q/k/v/output projections, softmax, scores)", r"attention"),
    ("optimizer (AdamW update, schedule)", r"ResourceApply|AdamW|adam_w|[Oo]ptimizer|/Assign(Add|Sub)"),
    ("depthwise convolutions", r"DepthwiseConv2dNative"),
    ("other convolutions (stem, expand, project)", r"Conv2D"),
    ("BatchNorm", r"FusedBatchNorm"),
    ("swish", r"[Ss]wish|[Ss]ilu|Sigmoid"),
    ("BERT feed-forward and embeddings", r"feedforward|intermediate|embedding|MatMul|Gather"),
    ("loss, gathers, all-reduce, finiteness check", r"loss|logits|IsFinite|All|Softmax"),
)
OTHER = "other (element-wise, reshapes, casts, ...)"
OP_EVENT = re.compile(r"[^\s:]+:[A-Za-z_]\w*")


def op_times(logdir: str) -> dict:
    """``"name:type" → summed duration in seconds`` of the TF ops in the profiler trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    times = collections.Counter()
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            if not plane.name.startswith("/host:CPU"):
                continue
            for line in plane.lines:
                for event in line.events:
                    name = plane.event_metadata[event.metadata_id].name
                    # Executed TF ops are "scope/name:Type"; runtime and function-call events
                    # ("EagerLocalExecute: ...", "KernelAndDeviceFunc::Run") would count twice.
                    if OP_EVENT.fullmatch(name):
                        times[name] += event.duration_ps * 1e-12
    return times


def categorize(times: dict, categories=CATEGORIES, other: str = OTHER) -> collections.Counter:
    """``op_times``' figures summed per category: the first ``(label, regex)`` of
    ``categories`` whose regex is found in the op's ``"name:type"``, else ``other``."""
    out = collections.Counter()
    patterns = [(label, re.compile(p)) for label, p in categories]
    for name, t in times.items():
        out[next((label for label, p in patterns if p.search(name)), other)] += t
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--seq_len", type=int, default=32)
    parser.add_argument("--text", default="mini")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="traced steps")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision")
    parser.add_argument("--no_append", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    import bench_train

    if args.bf16:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    data = bench_train.make_batch(args.batch_size, args.image_size, args.seq_len)
    _, objective = bench_train.build_ours(args.text, args.seq_len, 1e-4)
    ids = tf.constant(data["ids"])
    batch = {"image": tf.constant(data["pixels"]),
             "text": {"token_ids": ids, "padding_mask": tf.cast(ids != 0, tf.int32),
                      "segment_ids": tf.zeros_like(ids)}}
    step = tf.function(objective.train_step)
    for _ in range(args.warmup):
        step(batch)["loss"].numpy()
    logdir = tempfile.mkdtemp(prefix="profile_train_step_")
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    for _ in range(args.steps):
        step(batch)["loss"].numpy()
    wall = (time.perf_counter() - start) / args.steps
    tf.profiler.experimental.stop()
    times = op_times(logdir)
    if not times:
        raise SystemExit(f"profile_train_step.py: error: no TF op events in the trace in {logdir}")
    cats = categorize(times)
    total = sum(cats.values())
    order = [label for label, _ in CATEGORIES] + [OTHER]
    table = [[label, f"{cats[label] / args.steps * 1e3:.0f}", f"{cats[label] / total:.0%}"]
             for label in order if cats[label]]
    print(common.markdown_table(["category", "op ms / step", "share"], table))
    top = sorted(times.items(), key=lambda kv: -kv[1])[:12]
    print("\nlargest single ops (ms / step):\n" + "\n".join(
        f"  {t / args.steps * 1e3:7.1f}  {name}" for name, t in top))
    print(f"\nstep wall time {wall * 1e3:.0f} ms, op time {total / args.steps * 1e3:.0f} ms "
          f"per step (summed over threads)")
    precision = "bf16 mixed" if args.bf16 else "fp32"
    rows = [(f"train step profile ({precision}): {label}",
             f"{cats[label] / args.steps * 1e3:.0f} ms op time / step",
             f"{total / args.steps * 1e3:.0f} ms all ops ({wall * 1e3:.0f} ms wall)",
             f"{cats[label] / total:.0%}") for label in order if cats[label]]
    common.record("profile_train_step.py", rows,
                  f"B0@{args.image_size}px + BERT-{args.text}, seq {args.seq_len}, batch "
                  f"{args.batch_size}, AdamW, {precision}, CPU graph mode; {args.steps} traced "
                  f"steps after {args.warmup}", not args.no_append)
    return {"categories": dict(cats), "wall_s": wall, "total_op_s": total}


if __name__ == "__main__":
    main()
