"""Records (or checks) the golden 50-step trajectory of the default config.

    python tests/golden/record_golden.py --out=tests/golden/default_50_steps.npz   # record
    python tests/golden/record_golden.py --check=tests/golden/default_50_steps.npz # compare

Run in a fresh process: op determinism must be on before any op runs. The trajectory is the
per-step training loss (TensorBoard ``loss`` scalar, logged every step) and the final weights are
every model variable, keyed by its Keras path, restored from the run directory's newest
checkpoint.

History: first recorded on the commit before the [arch] refactor (f39813e), with every random
draw on; the refactor matched it bit for bit (and 3000 deterministic steps gave identical weights).
[scale] then changed the random streams on purpose (index-based sampling instead of the shuffle
buffer, stateless per-example crops/flips, stateless per-replica dropout): re-recorded after it,
as the issue asks, with random flips and stochastic depth off (text dropout is 0 by default), so
the trajectory is the data order and the arithmetic.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

STEPS = 50
WEIGHT_ATOL = 3e-4  # max |weight - golden| after STEPS steps (see the check in main)
MOVED_TO_OBJECTIVE = ()  # variables a refactor moved out of the model (none since the re-record)


def golden_config():
    from align_tf.configs import base
    c = base.get_config()
    c.train.steps = STEPS
    c.data.random_flip = False
    c.model.drop_connect_rate = 0.0
    c.train.steps_per_loop = 1
    c.train.log_every = 1
    c.train.checkpoint_every = STEPS
    c.eval.enabled = False
    c.export.enabled = False
    return c


def losses_from_events(log_dir):
    steps = {}
    for name in sorted(os.listdir(log_dir)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(log_dir, name)):
            for value in event.summary.value:
                if value.tag == "loss":
                    steps[event.step] = float(tf.make_ndarray(value.tensor))
    return np.array([steps[s] for s in sorted(steps)], np.float64)


def load_weights(run_dir):
    from align_tf.run_dir import load_model  # before the refactor: export.load_model_dir
    model = load_model(run_dir)[0]
    return {v.path: np.asarray(v.numpy()) for v in model.weights}


def run(run_dir):
    tf.config.experimental.enable_op_determinism()
    from align_tf import trainer
    trainer.train(golden_config(), run_dir, tf.distribute.OneDeviceStrategy("/cpu:0"), verbose=0)
    return losses_from_events(os.path.join(run_dir, "train")), load_weights(run_dir)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    parser.add_argument("--check")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        losses, weights = run(tmp)
    if args.out:
        np.savez_compressed(args.out, __losses__=losses, **weights)
        print(f"recorded {len(losses)} losses, {len(weights)} variables")
    if args.check:
        ref = np.load(args.check)
        np.testing.assert_allclose(losses, ref["__losses__"], rtol=1e-5)
        names = sorted(k for k in ref.files if k not in ("__losses__", *MOVED_TO_OBJECTIVE))
        assert sorted(weights) == names, set(weights) ^ set(names)
        worst = max(float(np.max(np.abs(weights[k] - ref[k]))) for k in names)
        # Kernels differ by CPU (oneDNN on AVX-512 Intel, Eigen on AVX2 AMD): the same commit
        # drifted 6e-5 after 50 steps on AMD from this Intel recording. A change of data order
        # or arithmetic moves the losses (checked above) and the weights by orders more.
        assert worst <= WEIGHT_ATOL, worst
        print(f"golden matches: {len(losses)} losses, max weight diff {worst:.2e}")


if __name__ == "__main__":
    sys.exit(main())
