"""Contrastive-loss scaling on 8 replicas: local loss (ours) vs full-gather loss, and the chunked
sigmoid loss, by global batch.

    python benchmarks/bench_scaling.py                               # 256 → 16384, ~5 min budget
    python benchmarks/bench_scaling.py --batches=256,1024 --modes=local --budget_s=60
    python benchmarks/bench_scaling.py --batches=4096,16384,32768 \
        --modes=sigmoid,local,sigmoid_dense --budget_s=3600           # [siglip]: sigmoid vs softmax

Eight logical CPU devices (``tf.config.set_logical_device_configuration`` before TF initialises)
under a ``MirroredStrategy``; each replica holds ``global / 8`` rows of random 640-d image and
text features, and one step is what the loss costs inside the real train step:

  tiny projection (640 × 640 per tower) → L2 norm → ``ReplicaContext.all_gather`` of both
  embeddings → loss → gradients through the gather → gradient all-reduce → SGD update.

* ``local`` (ours, ``align_tf.losses.align_loss`` as ``DualEncoder`` calls it): each replica
  scores its own rows against the gathered keys, ``(global/8) × global`` logits per direction.
* ``full``: every replica computes the full ``global × global`` logits of the gathered batch
  (open_clip's ``ClipLoss(local_loss=False)`` layout), 8× the loss work and memory in total.
* ``sigmoid`` (ours, ``align_tf.losses.sigmoid_loss``): SigLIP's loss by chunked gathers, at most
  ``(global/8)²`` logits per replica at a time, forward and backward (the custom gradient
  recomputes each chunk).
* ``sigmoid_dense``: the same loss written plainly: one gather of all texts and the whole
  ``(global/8) × global`` logits kept on the tape for the backward pass.

Every (mode, batch) runs in a fresh subprocess. Step time is the median of ``--repeats`` steps
after one warm-up step; memory is the process's resident-set high-water mark (``getrusage``),
reported as peak and as growth over the set-up, next to the peak of TF's host allocator
(``tf.config.experimental.get_memory_info("CPU:0")``, which the 8 logical devices share).
Larger batches are skipped once the previous batch's time or memory, extrapolated
quadratically, would exceed ``--budget_s`` or the memory the machine has available; the table says where it stopped. The towers are left out on purpose: at
these batches on 2 cores they would dominate and hide the loss.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import common  # noqa: E402  (also puts the repository on sys.path)

REPLICAS = 8
LABELS = {"local": "softmax, local loss", "full": "softmax, full gather",
          "sigmoid": "sigmoid, chunked", "sigmoid_dense": "sigmoid, one gather + plain tape"}


def child(mode: str, global_batch: int, dim: int, repeats: int) -> dict:
    """One (mode, batch) measurement; runs in its own process."""
    import resource

    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(REPLICAS)])
    from align_tf import losses

    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(REPLICAS)])
    local = global_batch // REPLICAS
    with strategy.scope():
        w_image = tf.Variable(tf.eye(dim) + 0.01 * tf.random.normal((dim, dim), seed=1))
        w_text = tf.Variable(tf.eye(dim) + 0.01 * tf.random.normal((dim, dim), seed=2))
        temperature = tf.Variable(0.05)
        log_scale, bias = tf.Variable(2.3), tf.Variable(-10.0)  # SigLIP's t′ = log 10, b = -10
    variables = [w_image, w_text, temperature] if mode in ("local", "full") else \
        [w_image, w_text, log_scale, bias]
    features = strategy.experimental_distribute_values_from_function(
        lambda ctx: (tf.random.normal((local, dim), seed=ctx.replica_id_in_sync_group),
                     tf.random.normal((local, dim), seed=100 + ctx.replica_id_in_sync_group)))

    def replica_step(inputs):
        ctx = tf.distribute.get_replica_context()
        with tf.GradientTape() as tape:
            image = losses.l2_normalize(tf.matmul(inputs[0], w_image))
            text = losses.l2_normalize(tf.matmul(inputs[1], w_text))
            if mode == "sigmoid":  # chunked gathers inside, custom gradient recomputes chunks
                out = losses.sigmoid_loss(image, text, tf.exp(log_scale), bias)
            elif mode == "sigmoid_dense":  # one gather, N_local × N_global logits on the tape
                all_text = ctx.all_gather(text, axis=0)
                logits = tf.exp(log_scale) * tf.matmul(image, all_text, transpose_b=True) + bias
                z = 2.0 * tf.one_hot(tf.range(local) + ctx.replica_id_in_sync_group * local,
                                     global_batch) - 1.0
                out = {"loss": tf.reduce_sum(tf.nn.softplus(-z * logits)) / local}
            elif mode == "local":
                all_image = ctx.all_gather(image, axis=0)
                all_text = ctx.all_gather(text, axis=0)
                offset = ctx.replica_id_in_sync_group * local
                out = losses.align_loss(image, text, temperature, all_image, all_text, offset)
            else:  # every replica: the whole global × global problem
                out = losses.align_loss(ctx.all_gather(image, axis=0),
                                        ctx.all_gather(text, axis=0), temperature)
            loss = out["loss"] / REPLICAS
        grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tape.gradient(loss, variables))
        for v, g in zip(variables, grads):
            v.assign_sub(1e-3 * g)
        return out["loss"]

    @tf.function
    def step():
        return strategy.reduce(tf.distribute.ReduceOp.MEAN,
                               strategy.run(replica_step, args=(features,)), axis=None)

    step.get_concrete_function()  # trace (no step run yet)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = common.time_calls(lambda: step().numpy(), repeats, warmup=1)
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:  # TF's allocator statistics: "CPU:0" is the (shared) host allocator
        tf_peak = tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2**20
    except (ValueError, tf.errors.OpError):
        tf_peak = None
    return {"mode": mode, "global_batch": global_batch, "step_s": times["median"],
            "first_s": times["first"], "tf_peak_mib": tf_peak, "rss_peak_mib": rss_peak,
            "growth_mib": rss_peak - rss_before}


def available_mib() -> float:
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: line.split()[1] for line in f}
    return int(info["MemAvailable"]) / 1024


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="256,1024,4096,16384")
    parser.add_argument("--modes", default="local,full",
                        help=f"comma list of {', '.join(LABELS)}; the first is the ratios' base")
    parser.add_argument("--dim", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget_s", type=float, default=300, help="wall-clock budget, all runs")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--no_append", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    if args.child:
        mode, batch = args.child.split(":")
        print(json.dumps(child(mode, int(batch), args.dim, args.repeats)))
        return {}

    start = time.time()
    batches = [int(b) for b in args.batches.split(",")]
    results, skipped = {}, []
    for batch in batches:
        for mode in args.modes.split(","):
            prev = [r for r in results.values() if r["mode"] == mode]
            if prev:
                scale = (batch / prev[-1]["global_batch"]) ** 2
                predicted_s = prev[-1]["wall_s"] + (args.repeats + 1) * prev[-1]["step_s"] * scale
                predicted_mib = max(prev[-1]["tf_peak_mib"] or 0, prev[-1]["growth_mib"]) * scale
                left = args.budget_s - (time.time() - start)
                if predicted_s > left or predicted_mib > 0.7 * available_mib() or \
                        any(m == mode for m, _ in skipped):
                    skipped.append((mode, batch))
                    print(f"skip {mode} {batch}: ~{predicted_s:.0f} s (left {left:.0f} s), "
                          f"~{predicted_mib:.0f} MiB (available {available_mib():.0f})", flush=True)
                    continue
            t0 = time.time()
            run = subprocess.run([sys.executable, os.path.abspath(__file__),
                                  f"--child={mode}:{batch}", f"--dim={args.dim}",
                                  f"--repeats={args.repeats}"], capture_output=True, text=True)
            if run.returncode != 0:
                print(f"{mode} {batch} failed (rc {run.returncode}): {run.stderr[-1500:]}")
                skipped.append((mode, batch))
                continue
            r = json.loads(run.stdout.strip().splitlines()[-1])
            r["wall_s"] = time.time() - t0
            results[(mode, batch)] = r
            print(f"{mode:<6} {batch:>6}: {r['step_s'] * 1e3:9.1f} ms/step, TF peak "
                  f"{r['tf_peak_mib'] or float('nan'):7.0f} MiB, RSS peak {r['rss_peak_mib']:.0f} "
                  f"MiB (+{r['growth_mib']:.0f}), {r['wall_s']:.0f} s wall", flush=True)

    modes = args.modes.split(",")
    table = []
    for batch in batches:
        for mode in modes:
            r = results.get((mode, batch))
            base_r = results.get((modes[0], batch))
            table.append([batch, batch // REPLICAS, mode,
                          f"{r['step_s']:.3f}" if r else "skipped",
                          common.fmt_ratio(r["step_s"], base_r["step_s"]) if r and base_r else "",
                          f"{r['tf_peak_mib']:.0f}" if r and r["tf_peak_mib"] is not None else "",
                          f"{r['growth_mib']:.0f}" if r else ""])
    print("\n" + common.markdown_table(
        ["global batch", "per replica", "mode", "s/step", f"time / {modes[0]}",
         "TF peak MiB", "RSS growth MiB"], table))
    print(f"\n{REPLICAS} logical CPU devices on {common.machine()}; dim {args.dim}; median of "
          f"{args.repeats} steps after 1 warm-up"
          + (f"; skipped (budget {args.budget_s:.0f} s or memory): "
             + ", ".join(f"{m} {b}" for m, b in skipped) if skipped else ""))
    if not args.no_append:
        mem = lambda r: (f"{r['tf_peak_mib']:.0f} MiB TF peak" if r["tf_peak_mib"] is not None
                         else f"+{r['growth_mib']:.0f} MiB RSS")  # noqa: E731
        cell = lambda r, m: f"{r['step_s'] * 1e3:.0f} ms, {mem(r)} ({LABELS[m]})" if r \
            else f"{LABELS[m]} skipped (time budget or memory)"  # noqa: E731
        rows = []
        for batch in batches:
            ours, ref = (results.get((m, batch)) for m in modes[:2])
            for mode in modes[2:] or [None]:
                third = results.get((mode, batch)) if mode else None
                rows.append((f"loss step, global batch {batch}",
                             cell(ours, modes[0]) if ours or len(modes) > 1 else "",
                             "; ".join([cell(ref, modes[1])] + ([cell(third, mode)] if mode else []))
                             if len(modes) > 1 else "",
                             common.fmt_ratio(ref["step_s"], ours["step_s"]) + " time"
                             if ours and ref else ""))
        common.append_results("bench_scaling.py", rows,
                              f"{REPLICAS} logical CPU devices, MirroredStrategy, dim {args.dim}, "
                              "projection + gather + loss + backward only")
    return {"results": list(results.values()), "skipped": skipped}


if __name__ == "__main__":
    main()
