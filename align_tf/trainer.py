"""Training, orchestrated: config → data → model → objective → steps → checkpoints.

``train()`` is a few named steps, each in its own module of ``align_tf.training``:

* ``validate_config`` (``training/validation.py``): one-line ``ConfigError``s naming the field;
* ``prepare_inputs`` (``training/inputs.py``): the synthetic corpus (if any) and the text
  preprocessor (vocabulary);
* ``build`` (here): model, optimizer and objective (``config.objective.name``) in the strategy's
  scope;
* ``choose_checkpoint`` / ``restore`` (``training/checkpoint.py``): the newest checkpoint of the run
  directory that reads back whole, if any (a restarted job resumes);
* ``TrainLoop`` (``training/loop.py``): ``steps_per_loop`` objective steps per host call on every
  replica, then logging, periodic evaluation, checkpoints and preemption
  (``training/preemption.py``).

The names other code uses (``trainer.validate_config``, ``trainer.restore``, …) stay importable
from here. The run directory's layout belongs to ``align_tf.run_dir``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import keras
import tensorflow as tf

from align_tf import distribute, objectives, optim
from align_tf.errors import ConfigError  # trainer.ConfigError: the same class
from align_tf.models.dual_encoder import DualEncoder, build_dual_encoder
from align_tf.run_dir import RunDir
from align_tf.tokenizer import TextPreprocessor
from align_tf.training.checkpoint import (
    checkpoint_candidates, checkpoint_for, choose_checkpoint, restore, verify_checkpoint)
from align_tf.training.inputs import make_preprocessor, prepare_inputs, train_dataset_fn
from align_tf.training.loop import PeriodicEvaluator, TrainLoop
from align_tf.training.preemption import Preempted
from align_tf.training.validation import check_jit_compile, validate_config

# What callers, tests and notebooks use as ``trainer.X`` (defined here or in align_tf.training).
__all__ = ["ConfigError", "PeriodicEvaluator", "Preempted", "TrainHooks", "TrainLoop",
           "TrainResult", "build", "check_jit_compile", "checkpoint_candidates", "checkpoint_for",
           "choose_checkpoint", "evaluate", "make_preprocessor", "prepare_inputs", "restore",
           "train", "train_dataset_fn", "validate_config", "verify_checkpoint"]


@dataclasses.dataclass
class TrainResult:
    """What ``train`` returns: the trained model, its preprocessor, the last loop's metrics and
    the objective (its optimizer and state)."""
    model: DualEncoder
    preprocessor: TextPreprocessor
    metrics: dict
    objective: objectives.Objective | None = None
    # The evaluation plans validation built, and the eval section they were built from:
    # ``evaluate`` reuses them (their data objects, rendered images) while it is unchanged.
    plans: list | None = None
    eval_json: str | None = None


def build(config, vocabulary_size: int):
    """``(model, objective)``: the plain model, the optimizer and the configured objective, with
    every variable created. Call in the strategy's scope."""
    model = build_dual_encoder(config.model, vocabulary_size)
    optimizer = optim.build_optimizer(config.optim, config.train.steps)
    # The objective builds the optimizer for what it trains (the model, plus ALBEF's MLM head).
    objective = objectives.build_objective(config.objective, model, optimizer, seed=config.seed,
                                           vocab_path=config.data.vocab_path)
    objective.accumulation_steps = config.train.accumulation_steps
    return model, objective


@dataclasses.dataclass
class TrainHooks:
    """The steps of ``train`` a variant of training replaces (``align_tf.finetune``: a classifier
    or a locked image tower, other data, weights from ``--init``); the defaults train ALIGN.

    Attributes:
      prepare_inputs: ``f(config, run, chief, resuming) -> (pairs or None, text preprocessor)``.
      build: ``f(config, vocabulary_size) -> (model, objective)``, called in the strategy's scope.
      dataset_fn: ``f(config, preprocessor, pairs, read_stats, batches_done, wrap_inputs)`` →
        a ``distribute_datasets_from_function`` callable (``train_dataset_fn``'s arguments).
      initialize: ``f(objective)`` on a fresh run only (nothing to resume), after ``build``.
    """
    prepare_inputs: Callable = prepare_inputs
    build: Callable = build
    dataset_fn: Callable = train_dataset_fn
    initialize: Callable | None = None


def train(config, model_dir: str, strategy: tf.distribute.Strategy | None = None,
          verbose: int = 1, wrap_inputs: Callable | None = None,
          hooks: TrainHooks | None = None) -> TrainResult:
    """Trains (or resumes) the model described by ``config``; returns the model and last metrics.

    Multi-worker: every worker runs this with the same ``model_dir`` (a shared file system such as
    GCS); all restore from ``model_dir/checkpoints``, only the chief writes there and to
    TensorBoard, the others save into a temp dir that is deleted at the end.

    Args:
      wrap_inputs: optional ``f(dataset, input_context, first_batch) -> dataset`` applied to each
        input pipeline's per-replica batches (see ``train_dataset_fn``).
      hooks: replaced steps (``TrainHooks``); default: ALIGN's own.

    Raises:
      ConfigError: the config cannot run, or ``model_dir`` has checkpoints but none restores.
      Preempted: SIGTERM arrived (on any worker); a checkpoint was written first.
      FloatingPointError: ``train.max_consecutive_skips`` non-finite steps in a row; nothing is
        saved, so the newest checkpoint is the last good one.
    """
    strategy = strategy or tf.distribute.get_strategy()
    plans = validate_config(config, strategy.num_replicas_in_sync)
    check_jit_compile(config, strategy)
    run = RunDir(model_dir).makedirs()
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if config.train.mixed_precision else "float32")
    chief = distribute.is_chief(strategy)
    write_dir = distribute.worker_write_dir(model_dir, strategy)
    try:
        latest = choose_checkpoint(run, strategy)
        hooks = hooks or TrainHooks()
        pairs, preprocessor = hooks.prepare_inputs(config, run, chief,
                                                   resuming=latest is not None)
        with strategy.scope():
            model, objective = hooks.build(config, preprocessor.vocabulary_size)
        if latest:
            restore(objective, latest, strategy)  # the start banner names it
        elif hooks.initialize is not None:
            hooks.initialize(objective)
        loop = TrainLoop(config, objective, strategy, run, RunDir(write_dir), preprocessor,
                         verbose=verbose if chief else 0, plans=plans)
        # Every train step (applied or skipped as non-finite) consumed one global batch.
        batches_done = int(objective.optimizer.iterations.numpy()) + \
            int(objective.skipped_steps.numpy())
        dataset = strategy.distribute_datasets_from_function(hooks.dataset_fn(
            config, preprocessor, pairs, loop.read_stats, batches_done, wrap_inputs))
        metrics = loop.run(iter(dataset), resumed=latest is not None)
        return TrainResult(model, preprocessor, metrics, objective, plans,
                           config.eval.to_json() if plans is not None else None)
    finally:
        if write_dir != model_dir:
            tf.io.gfile.rmtree(write_dir)


def evaluate(result: TrainResult, config, model_dir: str) -> dict:
    """Runs the config's evaluators (``config.eval``) on the trained model and writes
    ``{model_dir}/eval.json``: the report ``python -m align_tf.evaluate --model_dir`` writes."""
    from align_tf.evaluation import runner
    from align_tf.evaluation.embed import encoder_for_model
    encoder = encoder_for_model(result.model, result.preprocessor, config)
    plans = result.plans if result.plans is not None and \
        result.eval_json == config.eval.to_json() else runner.plans_from_config(config)
    start = time.time()  # the span the evaluate CLI reports too
    results = runner.run_plans(encoder, plans)
    run = RunDir(model_dir)
    encoder.checkpoint = run.latest_checkpoint()
    info = dict(encoder.info(), model_dir=model_dir, train_steps=config.train.steps)
    report = runner.make_report(results, info, time.time() - start)
    run.write_eval(report)
    return report
