"""Our training step now vs at an earlier commit, in the same run (a refactor must not slow it).

    python benchmarks/bench_vs_revision.py --rev=f39813e          # B0 @ 128 px + BERT-mini, batch 32
    python benchmarks/bench_vs_revision.py --rev=HEAD~3 --repeats=20

The earlier commit is checked out into a temporary git worktree. Two worker processes, one per
tree, each build the model and its train step with that tree's own API (``trainer.build`` and
``objective.train_step`` after the objectives split, ``trainer.build_model`` and
``DualEncoder.train_step`` before it) on the same config and batch (``bench_train.py``'s: AdamW,
dropout 0.1, stochastic depth 0.2, fp32, graph mode), warm up, then take turns step by step
(A B A B ...), each step timed inside its worker. Both load the machine alike, so the ratio is
meaningful even when the absolute times are not.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import common  # noqa: F401  (puts the repository on sys.path)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def worker(args):
    """Runs in a worker process with the tree to time first on ``sys.path``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    import tensorflow as tf

    from align_tf import trainer
    from bench_train import VOCAB, bench_config, make_batch

    # The tree's own configs/base.py: the editable install maps align_tf.configs to this checkout.
    spec = importlib.util.spec_from_file_location("tree_base", os.path.join(args.tree, "configs",
                                                                            "base.py"))
    base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base)

    keras.utils.set_random_seed(0)
    config = bench_config(base, args.text, args.seq_len, lr=1e-4)
    if hasattr(trainer, "build"):  # after the objectives split
        _, objective = trainer.build(config, VOCAB)
        step = tf.function(objective.train_step)
    else:
        step = tf.function(trainer.build_model(config, VOCAB).train_step)
    raw = make_batch(args.batch_size, args.image_size, args.seq_len)
    mask = (raw["ids"] != 0).astype(np.int32)
    batch = {"image": tf.constant(raw["pixels"]),
             "text": {"token_ids": tf.constant(raw["ids"]), "padding_mask": tf.constant(mask),
                      "segment_ids": tf.zeros_like(raw["ids"])}}
    for _ in range(args.warmup):
        float(step(batch)["loss"])
    print("ready", flush=True)
    for line in sys.stdin:  # one timed step per line
        start = time.perf_counter()
        float(step(batch)["loss"])
        print(json.dumps(time.perf_counter() - start), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default="f39813e", help="the earlier commit to compare against")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--seq_len", type=int, default=32)
    parser.add_argument("--text", default="mini")
    parser.add_argument("--repeats", type=int, default=12, help="timed steps per tree")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no_append", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, args.tree)
        sys.path.insert(1, HERE)
        return worker(args)

    old_tree = tempfile.mkdtemp(prefix="align_rev_")
    subprocess.run(["git", "worktree", "add", "--detach", "-q", old_tree, args.rev], cwd=REPO,
                   check=True)
    procs = {}
    try:
        flags = [f"--{k}={getattr(args, k)}" for k in ("batch_size", "image_size", "seq_len",
                                                         "text", "warmup")]
        for name, tree in (("now", REPO), (args.rev, old_tree)):
            # -I-free PYTHONPATH: the tree's align_tf must win over the installed (editable) one.
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([tree, HERE]))
            procs[name] = subprocess.Popen(
                [sys.executable, __file__, "--worker", f"--tree={tree}", *flags], cwd=tree,
                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert procs[name].stdout.readline().strip() == "ready", f"{name} worker failed"
        times = {name: [] for name in procs}
        for _ in range(args.repeats):
            for name, proc in procs.items():
                time.sleep(0.2)  # let the other process's threads go idle
                proc.stdin.write("step\n")
                proc.stdin.flush()
                times[name].append(json.loads(proc.stdout.readline()))
    finally:
        for proc in procs.values():
            proc.kill()
        subprocess.run(["git", "worktree", "remove", "--force", old_tree], cwd=REPO)
    summary = {name: common.summarize(t) for name, t in times.items()}
    now, before = summary["now"]["median"], summary[args.rev]["median"]
    print(common.markdown_table(
        ["tree", "step ms (median)", "p90 ms", "pairs/s"],
        [[name, f"{s['median'] * 1e3:.0f}", f"{s['p90'] * 1e3:.0f}",
          f"{args.batch_size / s['median']:.1f}"] for name, s in summary.items()]))
    print(f"\nnow vs {args.rev}: {common.fmt_ratio(before, now)} the speed ({args.repeats} interleaved steps "
          f"each after {args.warmup} warm-up; load {common.load()})")
    setup = (f"B0@{args.image_size}px + BERT-{args.text}, seq {args.seq_len}, batch "
             f"{args.batch_size}, AdamW, fp32, CPU, graph mode; {args.repeats} interleaved steps "
             f"after {args.warmup} warm-up, each tree in its own process")
    common.record("bench_vs_revision.py", [
        (f"train step now vs {args.rev}", f"{now * 1e3:.0f} ms ({args.batch_size / now:.1f} "
         "pairs/s)", f"{before * 1e3:.0f} ms ({args.batch_size / before:.1f} pairs/s)",
         common.fmt_ratio(before, now))], setup, append=not args.no_append)
    return summary


if __name__ == "__main__":
    main()
