"""The training loop: config → data → model → loss → optimizer steps → checkpoints.

``train()`` builds everything under the strategy's scope, restores the latest checkpoint in
``model_dir`` (so a restarted job resumes), runs ``DualEncoder.train_step`` on every replica
``steps_per_loop`` times per host call, and logs to a Keras progress bar and TensorBoard.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from typing import Callable

import keras
import tensorflow as tf

from align_tf import distribute, optim
from align_tf.data import pipeline, synthetic, tfrecord
from align_tf.models.dual_encoder import DualEncoder, build_dual_encoder
from align_tf.tokenizer import TextPreprocessor, build_vocabulary, save_vocabulary

SCALARS = ("loss", "loss_i2t", "loss_t2i", "temperature", "grad_norm", "i2t_accuracy",
           "skipped_steps", "consecutive_skips")


class ConfigError(ValueError):
    """A config that cannot run; the message is one line meant for the user."""


@dataclasses.dataclass
class TrainResult:
    model: DualEncoder
    preprocessor: TextPreprocessor
    metrics: dict


def validate_config(config, num_replicas: int) -> None:
    """Raises ``ConfigError`` for configs that would fail later with a less helpful error."""
    from align_tf.models import efficientnet, text_encoder
    if config.model.image_size_name not in efficientnet.SIZES:
        raise ConfigError(f"unknown model.image_size_name {config.model.image_size_name!r}; "
                          f"choose from {sorted(efficientnet.SIZES)}")
    if config.model.text_size_name not in text_encoder.SIZES:
        raise ConfigError(f"unknown model.text_size_name {config.model.text_size_name!r}; "
                          f"choose from {sorted(text_encoder.SIZES)}")
    try:
        distribute.batch_sizes(config.train.batch_size, num_replicas)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if config.data.max_tokens > config.model.max_sequence_length:
        raise ConfigError(f"data.max_tokens={config.data.max_tokens} exceeds "
                          f"model.max_sequence_length={config.model.max_sequence_length}")
    if config.data.name not in ("synthetic", "tfrecord"):
        raise ConfigError(f"unknown data.name {config.data.name!r}; choose 'synthetic' or 'tfrecord'")
    if config.data.name == "tfrecord":
        if not config.data.vocab_path:
            raise ConfigError("data.vocab_path is required for TFRecord data (build one with "
                              "python -m align_tf.data.vocab)")
        if not tf.io.gfile.exists(config.data.vocab_path):
            raise ConfigError(f"data.vocab_path {config.data.vocab_path} does not exist")
        if not tf.io.gfile.glob(config.data.train_pattern):
            raise ConfigError(f"data.train_pattern {config.data.train_pattern!r} matches no files")
    for name in ("steps", "steps_per_loop", "log_every", "checkpoint_every", "keep_checkpoints",
                 "max_consecutive_skips"):
        if config.train[name] <= 0:
            raise ConfigError(f"train.{name}={config.train[name]} must be positive")


def check_jit_compile(config, strategy: tf.distribute.Strategy) -> None:
    """Raises ``ConfigError`` if ``train.jit_compile`` cannot work with ``strategy``.

    Mirrored and multi-worker strategies drop their cross-replica ``merge_call`` inside an XLA
    function only when every device is a GPU; on CPU replicas the step's all-gather and
    optimizer update would call ``merge_call`` inside the nested jit function, which TF refuses.
    """
    if not config.train.jit_compile or strategy.num_replicas_in_sync == 1 or \
            isinstance(strategy, tf.distribute.TPUStrategy):
        return
    devices = strategy.extended.worker_devices
    if not all((tf.DeviceSpec.from_string(d).device_type or "").upper() == "GPU" for d in devices):
        raise ConfigError("train.jit_compile with several replicas needs GPUs or a TPU "
                          f"(replicas here: {', '.join(devices)})")


def make_preprocessor(config, model_dir: str, synthetic_captions=None, write_dir: str | None = None,
                      read_saved: bool = True) -> TextPreprocessor:
    """The vocabulary is the config's file, else the one saved in ``model_dir``, else learned.

    ``write_dir`` (default ``model_dir``) is where a learned or copied vocabulary is written; a
    non-chief worker passes its temp dir, and ``read_saved=False`` unless resuming, because in a
    fresh run the chief may be writing ``model_dir/vocab.txt`` at that very moment (the learned
    vocabulary is deterministic, so every worker derives the same one).
    """
    write_dir = write_dir or model_dir
    saved = os.path.join(model_dir, "vocab.txt")
    if config.data.vocab_path:
        path = config.data.vocab_path
    elif read_saved and tf.io.gfile.exists(saved):
        path = saved  # resuming: keep the vocabulary the checkpoint was trained with
    else:
        vocab = build_vocabulary(synthetic_captions, vocab_size=config.data.vocab_size)
        path = save_vocabulary(vocab, os.path.join(write_dir, "vocab.txt"))
    if path != saved and write_dir == model_dir:
        tf.io.gfile.copy(path, saved, overwrite=True)
    return TextPreprocessor(path, sequence_length=config.data.max_tokens)


def _train_dataset_fn(config, preprocessor, pairs, batches_done: int = 0, map_batches=None):
    """A ``distribute_datasets_from_function`` callable yielding per-replica batches.

    The global batch is split by ``distribute.batch_sizes``. Each input pipeline (one per host)
    reads its own shard and, per step, supplies one per-replica batch to each of its replicas.
    ``batches_done`` global batches are skipped: the seeded shuffle makes every pipeline's stream
    reproducible, so a resumed run neither repeats nor misses a pair (same cluster shape assumed).
    """
    def dataset_fn(input_context: tf.distribute.InputContext):
        sizes = distribute.batch_sizes(config.train.batch_size, input_context.num_replicas_in_sync,
                                       input_context.num_input_pipelines)
        if pairs is not None:
            ds = tf.data.Dataset.from_tensor_slices({"image": pairs["image"],
                                                     "caption": pairs["caption"]})
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        else:
            # Encoded bytes through the shuffle buffer; batch_pairs decodes after shuffling.
            ds = tfrecord.read_pairs(config.data.train_pattern, seed=config.seed,
                                     input_context=input_context, decode=False)
        ds = pipeline.batch_pairs(ds, preprocessor, sizes.per_replica, config.data.image_size,
                                  config.data.resize_size, training=True,
                                  shuffle_buffer=config.data.shuffle_buffer, seed=config.seed,
                                  flip=config.data.get("random_flip", True),
                                  skip_examples=batches_done * sizes.per_pipeline)
        if map_batches is not None:
            replicas_per_pipeline = sizes.per_pipeline // sizes.per_replica
            ds = map_batches(ds, input_context, batches_done * replicas_per_pipeline)
        return ds
    return dataset_fn


def build_model(config, vocabulary_size: int) -> DualEncoder:
    """Model + LAMB optimizer, built (variables created) in the current strategy scope."""
    model = build_dual_encoder(config.model, vocabulary_size)
    model.compile(optimizer=optim.build_optimizer(config.optim, config.train.steps))
    model.optimizer.build(model.trainable_variables)
    return model


@dataclasses.dataclass
class LoopEnd:
    """What ``TrainHooks.on_loop_end`` receives after each host loop.

    Attributes:
      step: optimizer steps applied so far (``optimizer.iterations``).
      first_batch: index of the loop's first global batch in the run's input stream (applied
        and skipped steps both consume one global batch).
      num_batches: global batches consumed by this loop.
      metrics: the loop's last-step metrics (as logged).
      records: ``TrainHooks.record_inputs`` results, ``(num_batches, global_batch, ...)``, or None.
      checkpoint: the newest checkpoint path of this worker after the loop, or None.
    """
    step: int
    first_batch: int
    num_batches: int
    metrics: dict
    records: object = None
    checkpoint: str | None = None


@dataclasses.dataclass
class TrainHooks:
    """Optional instrumentation of ``train()`` for tests and tools; everything is off by default.

    Attributes:
      map_batches: ``f(dataset, input_context, first_batch) -> dataset``, applied to each input
        pipeline's dataset of per-replica batches after the resume skip; ``first_batch`` is the
        pipeline-local index of its first element (e.g. to inject a NaN batch at a given step).
      record_inputs: ``f(per_replica_batch) -> Tensor`` evaluated on every batch a step consumes;
        gathered over replicas and handed to ``on_loop_end`` as ``LoopEnd.records`` (e.g. pair ids
        carried by the captions, to prove exact resume).
      on_loop_end: ``f(LoopEnd)``, called on every worker after each host loop and its checkpoint.
    """
    map_batches: Callable | None = None
    record_inputs: Callable | None = None
    on_loop_end: Callable | None = None


def train(config, model_dir: str, strategy: tf.distribute.Strategy | None = None,
          verbose: int = 1, hooks: TrainHooks | None = None) -> TrainResult:
    """Trains (or resumes) the model described by ``config``; returns the model and last metrics.

    Multi-worker: every worker runs this with the same ``model_dir`` (a shared file system such as
    GCS); all restore from ``model_dir/checkpoints``, only the chief writes there and to
    TensorBoard, the others save into a temp dir that is deleted at the end.

    Raises:
      ConfigError: the config cannot run.
      Preempted: SIGTERM arrived (on any worker); a checkpoint was written first.
      FloatingPointError: ``train.max_consecutive_skips`` non-finite steps in a row; nothing is
        saved, so the newest checkpoint is the last good one.
    """
    strategy = strategy or tf.distribute.get_strategy()
    hooks = hooks or TrainHooks()
    validate_config(config, strategy.num_replicas_in_sync)
    check_jit_compile(config, strategy)
    tf.io.gfile.makedirs(model_dir)
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if config.train.mixed_precision else "float32")
    chief = distribute.is_chief(strategy)
    write_dir = distribute.worker_write_dir(model_dir, strategy)
    try:
        return _train(config, model_dir, write_dir, strategy, verbose if chief else 0, hooks)
    finally:
        if write_dir != model_dir:
            tf.io.gfile.rmtree(write_dir)


def _train(config, model_dir, write_dir, strategy, verbose, hooks) -> TrainResult:
    chief = write_dir == model_dir
    restore_dir = os.path.join(model_dir, "checkpoints")
    latest = tf.train.latest_checkpoint(restore_dir)

    pairs = None
    if config.data.name == "synthetic":
        pairs = synthetic.make_pairs(config.data.num_train_examples, config.data.image_size,
                                     noise=config.data.caption_noise,
                                     partial=config.data.caption_partial, seed=config.seed,
                                     unnamed=config.data.get("synthetic_unnamed_colour", 0.0),
                                     colour_only=config.data.get("synthetic_colour_only", 0.0),
                                     two=config.data.get("synthetic_two_shapes", 0.0))
    preprocessor = make_preprocessor(config, model_dir, pairs["caption"] if pairs else None,
                                     write_dir=write_dir, read_saved=chief or latest is not None)
    if chief:
        with tf.io.gfile.GFile(os.path.join(model_dir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))

    with strategy.scope():
        model = build_model(config, preprocessor.vocabulary_size)
    optimizer = model.optimizer
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    # Non-chief workers keep one throw-away checkpoint; see distribute.worker_write_dir.
    manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(write_dir, "checkpoints"),
        max_to_keep=config.train.keep_checkpoints if chief else 1)
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        if verbose:
            print(f"Resumed from {latest}")
    # Every train step (applied or skipped as non-finite) consumed one global batch.
    batches_done = int(optimizer.iterations.numpy()) + int(model.skipped_steps.numpy())
    dataset = strategy.distribute_datasets_from_function(
        _train_dataset_fn(config, preprocessor, pairs, batches_done, hooks.map_batches))
    iterator = iter(dataset)

    replica_step = model.train_step
    if config.train.jit_compile and not isinstance(strategy, tf.distribute.TPUStrategy):
        # TPUStrategy compiles the replica function with XLA anyway; elsewhere the whole step
        # (towers, gather, loss, optimizer update) becomes one XLA cluster with static shapes.
        replica_step = tf.function(replica_step, jit_compile=True)
    record = hooks.record_inputs
    max_skips = float(config.train.max_consecutive_skips)

    def replica_fn(batch):
        out = replica_step(batch)
        if record is not None:
            out = dict(out, recorded=record(batch))
        return out

    def run_step(iterator):
        out = strategy.run(replica_fn, args=(next(iterator),))
        recorded = strategy.gather(out.pop("recorded"), axis=0) if record is not None else None
        # Gradients are all-reduced, so every replica (and worker) has the same skip count.
        skips = strategy.experimental_local_results(out["consecutive_skips"])[0]
        return out, recorded, skips

    @tf.function
    def train_loop(iterator, num_steps):
        """Up to ``num_steps`` steps in one host call (steps_per_execution); stops early once
        ``max_consecutive_skips`` non-finite steps came in a row, so no further batch is used."""
        out, recorded, worst = run_step(iterator)
        records = tf.zeros([0])  # a placeholder loop variable when nothing is recorded
        if record is not None:
            records = tf.TensorArray(recorded.dtype, size=0, dynamic_size=True,
                                     element_shape=recorded.shape)
            records = records.write(0, recorded)
        done = tf.constant(1)
        while done < num_steps and worst < max_skips:
            out, recorded, skips = run_step(iterator)
            if record is not None:
                records = records.write(done, recorded)
            worst = tf.maximum(worst, skips)
            done += 1
        metrics = {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, out[k], axis=None)
                   for k in SCALARS}
        metrics["max_consecutive_skips"] = worst
        return metrics, done, (records.stack() if record is not None else records)

    writer = tf.summary.create_file_writer(os.path.join(model_dir, "train")) if chief \
        else tf.summary.create_noop_writer()
    total, cfg = config.train.steps, config.train
    step = int(optimizer.iterations.numpy())
    last_saved = step if latest else None
    progbar = keras.utils.Progbar(total, verbose=verbose, unit_name="step",
                                  stateful_metrics=SCALARS + ("lr", "pairs/s", "skipped_records"))
    metrics = {}
    last_log_step, last_log_time = step, time.time()
    skipped = int(model.skipped_steps.numpy())
    preempted = _PreemptionFlag()
    stopped = False
    try:
        while step < total:
            if distribute.any_worker(strategy, bool(preempted)):
                stopped = True
                break
            # Loops end on log and checkpoint boundaries, so both happen at exact multiples.
            n = min(cfg.steps_per_loop, total - step, cfg.log_every - step % cfg.log_every,
                    cfg.checkpoint_every - step % cfg.checkpoint_every)
            loop_metrics, done, records = train_loop(iterator, tf.constant(n))
            metrics = {k: float(v) for k, v in loop_metrics.items()}
            first_batch, batches_done = batches_done, batches_done + int(done)
            step = int(optimizer.iterations.numpy())
            now = time.time()
            metrics["lr"] = float(optimizer.learning_rate)
            if config.data.name == "tfrecord":
                # Corrupt records/images the input pipeline skipped so far (tfrecord.STATS).
                metrics["skipped_records"] = float(tfrecord.STATS.skipped)
            metrics["pairs/s"] = cfg.batch_size * (step - last_log_step) / max(now - last_log_time, 1e-9)
            progbar.update(step, [(k, metrics[k]) for k in progbar.stateful_metrics if k in metrics])
            new_skips = int(metrics["skipped_steps"]) > skipped
            skipped = int(metrics["skipped_steps"])
            failed = metrics["max_consecutive_skips"] >= cfg.max_consecutive_skips
            # Skipped steps are logged at once: a run that then stops would otherwise never show them.
            if step % cfg.log_every == 0 or step == total or new_skips or failed:
                with writer.as_default(step=step):
                    for k, v in metrics.items():
                        if k != "max_consecutive_skips":
                            tf.summary.scalar(k.replace("pairs/s", "pairs_per_sec"), v)
                writer.flush()
                last_log_step, last_log_time = step, now
            if not failed and step % cfg.checkpoint_every == 0 and step != last_saved:
                manager.save(checkpoint_number=step)
                last_saved = step
            if hooks.on_loop_end is not None:
                hooks.on_loop_end(LoopEnd(step, first_batch, int(done), metrics,
                                          records.numpy() if record is not None else None,
                                          manager.latest_checkpoint))
            if failed:
                # Not saving keeps the last good checkpoint as the newest one.
                raise FloatingPointError(
                    f"{int(metrics['max_consecutive_skips'])} consecutive steps had non-finite "
                    f"loss or gradients (train.max_consecutive_skips="
                    f"{cfg.max_consecutive_skips}) at step {step}; stopping. Last good checkpoint: "
                    f"{latest_good(restore_dir, manager, chief)}")
        if step != last_saved:
            manager.save(checkpoint_number=step)
        writer.flush()
    finally:
        preempted.restore()
    if stopped:
        raise Preempted(f"SIGTERM at step {step}; saved {manager.latest_checkpoint}")
    return TrainResult(model, preprocessor, metrics)


def latest_good(restore_dir: str, manager, chief: bool) -> str | None:
    """The newest checkpoint in the run's directory (the chief's; a non-chief's are temporary)."""
    return manager.latest_checkpoint if chief else tf.train.latest_checkpoint(restore_dir)


class Preempted(RuntimeError):
    """Raised after the checkpoint that a SIGTERM (TPU/VM preemption) triggered has been written."""


class _PreemptionFlag:
    """Truthy once SIGTERM arrived; the loop then saves a checkpoint and stops cleanly."""

    def __init__(self):
        self._set = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self._set = True

    def __bool__(self):
        return self._set

    def restore(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def evaluate(result: TrainResult, config, model_dir: str) -> dict:
    """Runs the config's evaluation and writes ``{model_dir}/eval.json``."""
    from align_tf.evaluation.synthetic_eval import evaluate_synthetic
    if config.data.name != "synthetic":
        return {}
    metrics = evaluate_synthetic(result.model, result.preprocessor, config.data.image_size,
                                 num_per_class=config.eval.num_examples_per_class)
    metrics["train_steps"] = config.train.steps
    with tf.io.gfile.GFile(os.path.join(model_dir, "eval.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics
