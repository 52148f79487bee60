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
    if config.train.batch_size % num_replicas:
        raise ConfigError(f"train.batch_size={config.train.batch_size} is not divisible by the "
                          f"{num_replicas} replicas")
    if config.data.max_tokens > config.model.max_sequence_length:
        raise ConfigError(f"data.max_tokens={config.data.max_tokens} exceeds "
                          f"model.max_sequence_length={config.model.max_sequence_length}")
    if config.data.name not in ("synthetic", "tfrecord"):
        raise ConfigError(f"unknown data.name {config.data.name!r}; choose 'synthetic' or 'tfrecord'")
    if config.data.name == "tfrecord":
        if not config.data.vocab_path:
            raise ConfigError("data.vocab_path is required for TFRecord data (build one with "
                              "python -m align_tf.data.build_vocab)")
        if not tf.io.gfile.exists(config.data.vocab_path):
            raise ConfigError(f"data.vocab_path {config.data.vocab_path} does not exist")
        if not tf.io.gfile.glob(config.data.train_pattern):
            raise ConfigError(f"data.train_pattern {config.data.train_pattern!r} matches no files")
    if config.train.steps <= 0 or config.train.steps_per_loop <= 0:
        raise ConfigError("train.steps and train.steps_per_loop must be positive")


def make_preprocessor(config, model_dir: str, synthetic_captions=None) -> TextPreprocessor:
    """The vocabulary is the config's file, else the one saved in ``model_dir``, else learned."""
    saved = os.path.join(model_dir, "vocab.txt")
    if config.data.vocab_path:
        path = config.data.vocab_path
    elif tf.io.gfile.exists(saved):
        path = saved  # resuming: keep the vocabulary the checkpoint was trained with
    else:
        vocab = build_vocabulary(synthetic_captions, vocab_size=config.data.vocab_size)
        path = save_vocabulary(vocab, saved)
    if path != saved:
        tf.io.gfile.copy(path, saved, overwrite=True)
    return TextPreprocessor(path, sequence_length=config.data.max_tokens)


def _train_dataset_fn(config, preprocessor, pairs, batches_done: int = 0):
    """A ``distribute_datasets_from_function`` callable yielding per-replica batches.

    ``batches_done`` batches per replica are skipped: the seeded shuffle makes the stream
    reproducible, so a resumed run neither repeats nor misses a pair.
    """
    def dataset_fn(input_context: tf.distribute.InputContext):
        batch = input_context.get_per_replica_batch_size(config.train.batch_size)
        # Each input pipeline feeds replicas_per_pipeline replicas one batch per step.
        per_pipeline = batch * input_context.num_replicas_in_sync // input_context.num_input_pipelines
        if pairs is not None:
            ds = tf.data.Dataset.from_tensor_slices({"image": pairs["image"],
                                                     "caption": pairs["caption"]})
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        else:
            ds = tfrecord.read_pairs(config.data.train_pattern, seed=config.seed,
                                     input_context=input_context)
        return pipeline.batch_pairs(ds, preprocessor, batch, config.data.image_size,
                                    config.data.resize_size, training=True,
                                    shuffle_buffer=config.data.shuffle_buffer, seed=config.seed,
                                    skip_examples=batches_done * per_pipeline)
    return dataset_fn


def build_model(config, vocabulary_size: int) -> DualEncoder:
    """Model + LAMB optimizer, built (variables created) in the current strategy scope."""
    model = build_dual_encoder(config.model, vocabulary_size)
    model.compile(optimizer=optim.build_optimizer(config.optim, config.train.steps))
    model.optimizer.build(model.trainable_variables)
    return model


def train(config, model_dir: str, strategy: tf.distribute.Strategy | None = None,
          verbose: int = 1) -> TrainResult:
    """Trains (or resumes) the model described by ``config``; returns the model and last metrics."""
    strategy = strategy or tf.distribute.get_strategy()
    validate_config(config, strategy.num_replicas_in_sync)
    tf.io.gfile.makedirs(model_dir)
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if config.train.mixed_precision else "float32")
    chief = distribute.is_chief(strategy)

    pairs = None
    if config.data.name == "synthetic":
        pairs = synthetic.make_pairs(config.data.num_train_examples, config.data.image_size,
                                     noise=config.data.caption_noise,
                                     partial=config.data.caption_partial, seed=config.seed)
    preprocessor = make_preprocessor(config, model_dir, pairs["caption"] if pairs else None)
    if chief:
        with tf.io.gfile.GFile(os.path.join(model_dir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))

    with strategy.scope():
        model = build_model(config, preprocessor.vocabulary_size)
    optimizer = model.optimizer
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(model_dir, "checkpoints"), max_to_keep=config.train.keep_checkpoints,
        step_counter=optimizer.iterations, checkpoint_interval=config.train.checkpoint_every)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        if verbose:
            print(f"Resumed from {manager.latest_checkpoint}")
    # Every train step (applied or skipped as non-finite) consumed one batch per replica.
    batches_done = int(optimizer.iterations.numpy()) + int(model.skipped_steps.numpy())
    dataset = strategy.distribute_datasets_from_function(
        _train_dataset_fn(config, preprocessor, pairs, batches_done))
    iterator = iter(dataset)

    replica_step = model.train_step
    if config.train.jit_compile:
        replica_step = tf.function(replica_step, jit_compile=True)

    @tf.function
    def train_loop(iterator, num_steps):
        out = strategy.run(replica_step, args=(next(iterator),))
        for _ in tf.range(num_steps - 1):
            out = strategy.run(replica_step, args=(next(iterator),))
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, out[k], axis=None) for k in SCALARS}

    writer = tf.summary.create_file_writer(os.path.join(model_dir, "train")) if chief \
        else tf.summary.create_noop_writer()
    total = config.train.steps
    step = int(optimizer.iterations.numpy())
    progbar = keras.utils.Progbar(total, stateful_metrics=SCALARS + ("lr", "pairs/s"),
                                  verbose=verbose, unit_name="step")
    metrics = {}
    last_log_step, last_log_time = step, time.time()
    preempted = _PreemptionFlag()
    while step < total and not preempted:
        n = min(config.train.steps_per_loop, total - step,
                config.train.log_every - step % config.train.log_every)
        metrics = {k: float(v) for k, v in train_loop(iterator, tf.constant(n)).items()}
        step = int(optimizer.iterations.numpy())
        now = time.time()
        metrics["lr"] = float(optimizer.learning_rate)
        metrics["pairs/s"] = config.train.batch_size * (step - last_log_step) / max(now - last_log_time, 1e-9)
        progbar.update(step, [(k, metrics[k]) for k in progbar.stateful_metrics if k in metrics])
        if step % config.train.log_every == 0 or step == total:
            with writer.as_default(step=step):
                for k, v in metrics.items():
                    tf.summary.scalar(k.replace("pairs/s", "pairs_per_sec"), v)
            last_log_step, last_log_time = step, now
        if metrics["consecutive_skips"] >= config.train.max_consecutive_skips:
            # Not saving here keeps the last good checkpoint as the newest one.
            raise FloatingPointError(
                f"{int(metrics['consecutive_skips'])} consecutive steps had non-finite loss or "
                f"gradients (step {step}); stopping. Last good checkpoint: {manager.latest_checkpoint}")
        manager.save(checkpoint_number=step, check_interval=True)
    manager.save(checkpoint_number=step, check_interval=False)
    writer.flush()
    preempted.restore()
    if preempted:
        raise Preempted(f"SIGTERM at step {step}; saved {manager.latest_checkpoint}")
    return TrainResult(model, preprocessor, metrics)


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
