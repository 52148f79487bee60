"""Test hook for tests/test_scale.py (not a test itself): runs ``align_tf.trainer.train`` in its own
process, like ``python -m align_tf.train``, plus the instrumentation the preemption tests need.

    python tests/scale_worker.py --model_dir=DIR --config_json='{"train.steps": 18, ...}'
        [--strategy=one_device] [--record=FILE] [--loop_delay=SECONDS]

* The config is ``configs/base.py`` with the dotted overrides of ``--config_json``.
* ``--record``: after every host loop, one JSON line ``{"first_batch", "num_batches", "step",
  "checkpoint", "ids"}`` is appended and fsynced, where ``ids[i]`` are the pair ids of global batch
  ``first_batch + i``, read from the captions: the test corpus's caption of pair ``k`` is the single
  vocabulary word with id ``k + len(RESERVED_TOKENS)``, so ``token_ids[:, 1]`` (after ``[CLS]``)
  identifies the pair. The ids come from the batches the train step consumed, not from a replay
  of the pipeline.
* ``--loop_delay``: sleep after each loop, so a test can deliver a signal between loops.

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
    parser.add_argument("--loop_delay", type=float, default=0.0)
    args = parser.parse_args()

    from align_tf import distribute
    strategy = distribute.get_strategy(args.strategy)  # before any other TF op (multi-worker)

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

    def on_loop_end(end: trainer.LoopEnd):
        if args.record:
            ids = (end.records - len(RESERVED_TOKENS)).tolist()
            line = json.dumps({"first_batch": end.first_batch, "num_batches": end.num_batches,
                               "step": end.step, "checkpoint": end.checkpoint, "ids": ids})
            with open(args.record, "a") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
        time.sleep(args.loop_delay)

    hooks = trainer.TrainHooks(
        record_inputs=(lambda batch: batch["text"]["token_ids"][:, 1]) if args.record else None,
        on_loop_end=on_loop_end)
    try:
        result = trainer.train(config, args.model_dir, strategy, verbose=0, hooks=hooks)
    except trainer.Preempted as e:
        print(f"preempted: {e}", flush=True)
        sys.exit(EXIT_PREEMPTED)
    except FloatingPointError as e:
        print(f"non-finite: {e}", flush=True)
        sys.exit(EXIT_NON_FINITE)
    print(f"done: step {int(result.model.optimizer.iterations.numpy())}", flush=True)


if __name__ == "__main__":
    main()
