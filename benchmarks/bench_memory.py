"""Peak TF memory and step time of a training step vs gradient accumulation (K) and remat.

    python benchmarks/bench_memory.py                                # B0 + BERT-mini, 224 px, 8 GiB
    python benchmarks/bench_memory.py --image_size=128 --budget_gib=1 --no_append

Model: EfficientNet-B0 + BERT-mini (``--image``, ``--text``), 32 tokens, LAMB, dropout 0.1 and
stochastic depth 0.2, contrastive objective, one device, ``tf.function`` without XLA. Each
configuration runs in its own process (allocator statistics and peak start clean): one warm-up
step, then ``--repeats`` timed steps; the peak is TF's allocator peak over the timed steps
(``tf.config.experimental.get_memory_info(device)["peak"]``, CPU included: weights, optimizer
slots and the batch count too; memory oneDNN allocates outside TF's allocator does not).

1. For each configuration (K, remat) the peak is measured at two global batches
   (``--fit_batches``) and fitted as ``a + b · batch`` (weights, slots + activations).
2. The budget (``--budget_gib``; default: the peak of K = 1 without remat at the larger fit
   batch, which is then by construction the largest batch that fits without them): every
   configuration's peak and step time at that batch, and its largest batch within the budget
   (fitted, rounded down to a multiple of 8 · K), run and its measured peak reported.
3. The fitted largest batch within ``--predict_gib`` (8 GiB), not measured.

Appends one row per figure to ``benchmarks/RESULTS.md`` (``--no_append`` skips it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common  # noqa: E402  (also puts the repository on sys.path)

CONFIGS = ((1, False), (1, True), (4, False), (4, True))  # (accumulation_steps, remat)
GIB = 2 ** 30


def run_one(args, k: int, remat: bool, batch: int) -> dict:
    """In this process: ``{"peak": bytes, "step_s": median seconds}`` of the configured step."""
    import numpy as np
    import tensorflow as tf

    from align_tf import objectives, optim
    from align_tf.configs import base
    from align_tf.models.dual_encoder import build_dual_encoder

    c = base.get_config()
    c.model.image_size_name, c.model.text_size_name = args.image, args.text
    c.model.max_sequence_length, c.model.text_dropout = args.tokens, 0.1
    c.model.drop_connect_rate, c.model.remat = 0.2, remat
    model = build_dual_encoder(c.model, args.vocab)
    objective = objectives.build_objective(c.objective, model,
                                           optim.build_optimizer(c.optim, total_steps=100))
    objective.accumulation_steps = k
    rng = np.random.default_rng(0)
    batch_data = {
        "image": tf.constant(rng.uniform(size=(batch, args.image_size, args.image_size, 3)),
                             tf.float32),
        "text": {"token_ids": tf.constant(rng.integers(5, args.vocab, (batch, args.tokens)),
                                          tf.int32),
                 "padding_mask": tf.ones((batch, args.tokens), tf.int32),
                 "segment_ids": tf.zeros((batch, args.tokens), tf.int32)}}
    step = tf.function(objective.train_step)
    float(step(batch_data)["loss"])  # trace and warm up
    device = "CPU:0" if not tf.config.list_physical_devices("GPU") else "GPU:0"
    tf.config.experimental.reset_memory_stats(device)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        float(step(batch_data)["loss"])
        times.append(time.perf_counter() - start)
    return {"peak": tf.config.experimental.get_memory_info(device)["peak"],
            "step_s": sorted(times)[len(times) // 2], "device": device}


def measure(args, k, remat, batch) -> dict:
    """``run_one`` in a fresh process (or its result from ``--cache``, where it is stored)."""
    flags = [f"--_run={k},{int(remat)},{batch}"] + [
        f"--{name}={getattr(args, name)}" for name in
        ("image", "text", "image_size", "tokens", "vocab", "repeats")]
    cache = {}
    if args.cache and os.path.exists(args.cache):
        with open(args.cache) as f:
            cache = json.load(f)
    key = " ".join(flags)
    if key in cache:
        result = cache[key]
    else:
        cmd = [sys.executable, __file__] + flags
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if out.returncode or not lines:
            raise RuntimeError(f"{cmd} failed:\n{out.stderr[-2000:]}")
        result = json.loads(lines[-1])
        if args.cache:
            cache[key] = result
            with open(args.cache, "w") as f:
                json.dump(cache, f, indent=1)
    print(f"  K={k} remat={remat} batch={batch}: peak {result['peak'] / GIB:.3f} GiB, "
          f"step {result['step_s']:.2f} s", flush=True)
    return result


def fit(args, k, remat) -> tuple:
    """``(fixed bytes, bytes per example, measurement at the larger batch)``: the peak measured at
    the two ``--fit_batches`` as ``a + b · batch``."""
    b1, b2 = args.fit_batches
    r1, r2 = (measure(args, k, remat, b) for b in (b1, b2))
    per_example = max((r2["peak"] - r1["peak"]) / (b2 - b1), 1.0)
    return r1["peak"] - per_example * b1, per_example, r2


def largest_batch(fixed, per_example, budget, k) -> int:
    """The largest multiple of 8·K whose fitted peak stays within ``budget`` bytes."""
    unit = 8 * k
    return max(unit, int((budget - fixed) / per_example) // unit * unit)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default="b0")
    parser.add_argument("--text", default="mini")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--budget_gib", type=float, default=None,
                        help="memory budget; default: the peak of K=1 without remat at the larger "
                             "fit batch, i.e. that batch is the largest that fits without them")
    parser.add_argument("--predict_gib", type=float, default=8.0,
                        help="also report the fitted (not measured) largest batch within this")
    parser.add_argument("--fit_batches", type=int, nargs=2, default=(16, 32))
    parser.add_argument("--no_append", action="store_true")
    parser.add_argument("--output", default=None)
    parser.add_argument("--cache", default=None,
                        help="JSON file of measurements to reuse and extend (an interrupted run "
                             "continues where it stopped)")
    parser.add_argument("--_run", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._run:
        k, remat, batch = (int(x) for x in args._run.split(","))
        print(json.dumps(run_one(args, k, bool(remat), batch)))
        return {}

    fits = {}
    for k, remat in CONFIGS:
        print(f"fitting K={k} remat={remat}", flush=True)
        fits[(k, remat)] = fit(args, k, remat)
    base_batch = args.fit_batches[1]
    ref = fits[(1, False)][2]
    budget = args.budget_gib * GIB if args.budget_gib else ref["peak"]
    largest, at_budget = {}, {}
    for k, remat in CONFIGS:
        fixed, per_example, at_base = fits[(k, remat)]
        largest[(k, remat)] = largest_batch(fixed, per_example, budget, k)
        at_budget[(k, remat)] = at_base if largest[(k, remat)] == base_batch else \
            measure(args, k, remat, largest[(k, remat)])

    setup = (f"{args.image} + BERT-{args.text}, {args.image_size} px, {args.tokens} tokens, LAMB, "
             f"dropout 0.1, stochastic depth 0.2, one {ref['device']}, no XLA; TF allocator peak "
             f"(get_memory_info); budget {budget / GIB:.3f} GiB = "
             f"{'--budget_gib' if args.budget_gib else f'K=1 peak at batch {base_batch}'}")
    name = lambda k, remat: f"K={k}{', remat' if remat else ''}"  # noqa: E731
    rows, table = [], []
    for k, remat in CONFIGS:
        fixed, per_example, r = fits[(k, remat)]
        b = at_budget[(k, remat)]
        predicted = largest_batch(fixed, per_example, args.predict_gib * GIB, k)
        rows.append((f"peak GiB / step s at batch {base_batch} ({name(k, remat)})",
                     f"{r['peak'] / GIB:.3f} / {r['step_s']:.2f}",
                     f"{ref['peak'] / GIB:.3f} / {ref['step_s']:.2f} (K=1)",
                     f"{common.fmt_ratio(r['peak'], ref['peak'])} memory, "
                     f"{common.fmt_ratio(r['step_s'], ref['step_s'])} time"))
        # The fit is linear from two small batches; say so where the measured peak disagrees.
        over = " OVER the budget: the linear fit fails this far" if b["peak"] > budget else ""
        rows.append((f"largest global batch within {budget / GIB:.3f} GiB ({name(k, remat)})",
                     f"{largest[(k, remat)]} (measured peak {b['peak'] / GIB:.3f} GiB, "
                     f"{b['step_s']:.2f} s/step{over})", f"{base_batch} (K=1)",
                     common.fmt_ratio(largest[(k, remat)], base_batch)))
        rows.append((f"fitted largest global batch within {args.predict_gib:g} GiB "
                     f"({name(k, remat)}; not measured)", predicted, "", ""))
        table.append((name(k, remat), f"{r['peak'] / GIB:.3f}", f"{r['step_s']:.2f}",
                      f"{per_example / 2 ** 20:.1f}", largest[(k, remat)],
                      f"{b['peak'] / GIB:.3f}", predicted))
    print(common.markdown_table(
        ("config", f"peak GiB @ {base_batch}", f"step s @ {base_batch}", "MiB / example",
         f"largest batch ≤ {budget / GIB:.3f} GiB", "its measured peak GiB",
         f"fitted largest ≤ {args.predict_gib:g} GiB"), table))
    data = {"budget": budget, "fits": {name(*c): v for c, v in fits.items()},
            "largest": {name(*c): v for c, v in largest.items()},
            "at_budget": {name(*c): v for c, v in at_budget.items()}}
    common.record("bench_memory.py", rows, setup, append=not args.no_append, output=args.output,
                  data=data)
    return data


if __name__ == "__main__":
    main()
