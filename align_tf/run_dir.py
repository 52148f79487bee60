"""The run directory: the one module that knows its layout, writes it and reads it back.

    RUN/config.json     the resolved training config (``configs/base.py`` fields)
    RUN/vocab.txt       the WordPiece vocabulary the text tower was trained with
    RUN/checkpoints/    ``tf.train.Checkpoint``s of model, optimizer and objective state
    RUN/train/          TensorBoard scalars
    RUN/eval.json       the evaluation report (``align_tf.evaluation.runner.make_report``)
    RUN/savedmodel/     the exported SavedModel / TF Hub module

The trainer, the HF converter, export, evaluation and the tests all go through here, so a change
of layout (or of the config's fields) is made once. Run directories written by older releases
(config fields since moved or nested) are read through ``align_tf.migrate.config_json``.
"""

from __future__ import annotations

import json
import os

import ml_collections
import tensorflow as tf

from align_tf import compat, migrate

CONFIG, VOCAB, CHECKPOINTS, TRAIN_LOGS, EVAL, SAVEDMODEL = (
    "config.json", "vocab.txt", "checkpoints", "train", "eval.json", "savedmodel")


class RunDir:
    """Paths of one run directory (local or ``gs://``) and the reads and writes of its files."""

    def __init__(self, path: str):
        self.path = path
        self.config_path = os.path.join(path, CONFIG)
        self.vocab_path = os.path.join(path, VOCAB)
        self.checkpoint_dir = os.path.join(path, CHECKPOINTS)
        self.train_log_dir = os.path.join(path, TRAIN_LOGS)
        self.eval_path = os.path.join(path, EVAL)
        self.savedmodel_path = os.path.join(path, SAVEDMODEL)

    def makedirs(self) -> "RunDir":
        tf.io.gfile.makedirs(self.path)
        return self

    def save_config(self, config) -> str:
        with tf.io.gfile.GFile(self.config_path, "w") as f:
            f.write(config.to_json_best_effort(indent=2))
        return self.config_path

    def load_config(self) -> ml_collections.ConfigDict:
        """``config.json`` as today's config (older spellings through ``align_tf.migrate``);
        one-line ``FileNotFoundError`` if missing."""
        if not tf.io.gfile.exists(self.config_path):
            raise FileNotFoundError(f"no {CONFIG} in {self.path} (is it a training model_dir?)")
        with tf.io.gfile.GFile(self.config_path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{self.config_path} is not valid JSON: {e}") from None
        return migrate.config_json(data)

    def has_vocabulary(self) -> bool:
        return tf.io.gfile.exists(self.vocab_path)

    def save_vocabulary(self, vocabulary) -> str:
        """Writes ``vocabulary`` (a token list, or the path of a vocabulary file) as vocab.txt."""
        if isinstance(vocabulary, str):
            if vocabulary != self.vocab_path:
                tf.io.gfile.copy(vocabulary, self.vocab_path, overwrite=True)
            return self.vocab_path
        from align_tf.tokenizer import save_vocabulary
        return save_vocabulary(vocabulary, self.vocab_path)

    def latest_checkpoint(self) -> str | None:
        return tf.train.latest_checkpoint(self.checkpoint_dir)

    def checkpoint_manager(self, checkpoint: tf.train.Checkpoint, max_to_keep: int):
        return tf.train.CheckpointManager(checkpoint, self.checkpoint_dir, max_to_keep=max_to_keep)

    def save_model(self, model, config, vocabulary) -> str:
        """Writes a model-only run directory: config.json, vocab.txt and a checkpoint of the model's
        weights (no optimizer: enough to evaluate, export or ``load_model``, not to resume).
        Returns the checkpoint path."""
        self.makedirs()
        self.save_vocabulary(vocabulary)
        self.save_config(config)
        return self.checkpoint_manager(tf.train.Checkpoint(model=model), max_to_keep=1).save(
            checkpoint_number=0)

    def write_eval(self, report: dict) -> str:
        with tf.io.gfile.GFile(self.eval_path, "w") as f:
            json.dump(report, f, indent=2)
        return self.eval_path

    def read_eval(self) -> dict:
        with tf.io.gfile.GFile(self.eval_path) as f:
            return json.load(f)


def load_config(model_dir: str) -> ml_collections.ConfigDict:
    """``RunDir(model_dir).load_config()``."""
    return RunDir(model_dir).load_config()


def load_model(model_dir: str, checkpoint: str | None = None):
    """Rebuilds ``(model, preprocessor, config)`` from a run directory, model weights only.

    Reads ``config.json`` and ``vocab.txt`` and restores ``checkpoint`` (default: the newest in
    ``checkpoints/``). The optimizer's and the objective's state in the checkpoint are not needed
    to embed and are skipped; every model variable must be restored, or this fails.
    """
    import keras

    from align_tf.models.dual_encoder import build_dual_encoder
    from align_tf.tokenizer import TextPreprocessor

    run = RunDir(model_dir)
    config = run.load_config()
    ckpt = checkpoint or run.latest_checkpoint()
    if not ckpt:
        raise FileNotFoundError(f"no checkpoint in {run.checkpoint_dir}")
    if not run.has_vocabulary():
        raise FileNotFoundError(f"no {VOCAB} in {model_dir}")
    preprocessor = TextPreprocessor.for_data(run.vocab_path, config.data)
    # Float32 weights and compute whatever the run trained with (bf16 checkpoints hold f32 vars).
    keras.config.set_dtype_policy("float32")
    model = build_dual_encoder(config.model, preprocessor.vocabulary_size)
    restore_model(model, ckpt)
    return model, preprocessor, config


class _Parts(compat.AutoTrackable):
    """Named parts of a model, tracked under the names the model gives them in a checkpoint."""


def restore_model(model, checkpoint: str, parts=None) -> None:
    """Restores ``model``'s weights (the checkpoint key ``model``) from ``checkpoint``.

    ``parts``: attribute names of ``model`` to restore alone (e.g. ``("image_encoder",)`` for a
    classifier built on a run's image tower); default the whole model. The optimizer's and the
    objective's state in the checkpoint are skipped; every variable restored must be in it with its
    shape, or this raises a one-line ``ValueError`` (a checkpoint of another architecture).
    """
    target = model
    if parts is not None:
        target = _Parts()
        for name in parts:
            setattr(target, name, getattr(model, name))
    try:
        status = tf.train.Checkpoint(model=target).restore(checkpoint)
        status.expect_partial()  # optimizer and objective state are in the checkpoint, not needed
        status.assert_existing_objects_matched()  # but every variable asked for must be
    except (tf.errors.OpError, AssertionError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot restore the model from {checkpoint}: {first[:300]}") from None

