"""Test driver for tests/test_scale.py (not a test itself): runs ``align_tf.trainer.train`` in its
own process, like ``python -m align_tf.train``, observing the input stream through a dataset
wrapper (``train(wrap_inputs=...)``), never from inside the compiled training loop.

    python tests/scale_worker.py --model_dir=DIR --config_json='{"train.steps": 18, ...}'
        [--strategy=one_device] [--record=FILE] [--input_delay=SECONDS] [--deterministic]

* The config is ``configs/base.py`` with the dotted overrides of ``--config_json``.
* ``--record``: for every global batch the input pipeline produces, one JSON line
  ``{"batch", "ids"}`` is appended and fsynced, where ``ids`` are the pair ids of global batch
  ``batch`` (the run's input-stream index; one replica, so a pipeline batch is a global batch),
  read from the captions: the test corpus's caption of pair ``k`` is the single vocabulary word
  with id ``k + len(RESERVED_TOKENS)``, so ``token_ids[:, 1]`` (after ``[CLS]``) identifies the
  pair. The pipeline reads a few batches ahead of the train step, so a batch recorded after the
  newest checkpoint may not have been trained on; every batch before it was.
* ``--input_delay``: sleep after producing each batch, so a test can deliver a signal mid-run.
* ``--deterministic``: ``tf.config.experimental.enable_op_determinism()`` (runs then compare bit
  for bit).

Exit status: 0 finished, 75 preempted (SIGTERM, checkpoint written), 3 stopped on non-finite steps.
Rerunning the same command resumes from ``model_dir``'s newest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

EXIT_PREEMPTED, EXIT_NON_FINITE = 75, 3


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--config_json", default="{}")
    parser.add_argument("--strategy", default="one_device")
    parser.add_argument("--record", default=None)
    parser.add_argument("--input_delay", type=float, default=0.0)
    parser.add_argument("--deterministic", action="store_true")
    args = parser.parse_args()

    from align_tf import distribute
    strategy = distribute.get_strategy(args.strategy)  # before any other TF op (multi-worker)
    if args.deterministic:
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()

    import numpy as np
    import tensorflow as tf

    from align_tf import trainer
    from align_tf.configs import base
    from align_tf.tokenizer import RESERVED_TOKENS

    config = base.get_config()
    for key, value in json.loads(args.config_json).items():
        *path, leaf = key.split(".")
        node = config
        for name in path:
            node = node[name]
        node[leaf] = value

    def record(index, token_ids):
        if args.record:
            ids = (token_ids[:, 1] - len(RESERVED_TOKENS)).tolist()
            with open(args.record, "a") as f:
                f.write(json.dumps({"batch": int(index), "ids": ids}) + "\n")
                f.flush()
                os.fsync(f.fileno())
        time.sleep(args.input_delay)
        return np.int64(index)

    def wrap_inputs(dataset, input_context, first_batch):
        def tap(index, batch):
            done = tf.numpy_function(record, [index, batch["text"]["token_ids"]], tf.int64)
            with tf.control_dependencies([done]):
                return tf.nest.map_structure(tf.identity, batch)
        return dataset.enumerate(start=first_batch).map(tap)

    try:
        result = trainer.train(config, args.model_dir, strategy, verbose=0,
                               wrap_inputs=wrap_inputs)
    except trainer.Preempted as e:
        print(f"preempted: {e}", flush=True)
        sys.exit(EXIT_PREEMPTED)
    except FloatingPointError as e:
        print(f"non-finite: {e}", flush=True)
        sys.exit(EXIT_NON_FINITE)
    print(f"done: step {int(result.objective.optimizer.iterations.numpy())}", flush=True)


if __name__ == "__main__":
    main()
