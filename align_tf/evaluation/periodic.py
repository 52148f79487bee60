"""Evaluation during training: ``make_periodic_evaluator(config, preprocessor)`` → ``fn(model)``.

Usage in a training loop (every ``eval_every`` steps)::

    evaluate_fn = make_periodic_evaluator(config, preprocessor)   # once: builds/renders the data
    ...
    metrics = evaluate_fn(model)   # {"synthetic/zeroshot/top1": 0.41, ...}: flat, floats
    with writer.as_default(step=step):
        for name, value in metrics.items():
            tf.summary.scalar("eval/" + name, value)

Which data is evaluated comes from the config (fields read with defaults, so older configs work):
  * ``data.name == "synthetic"``: zero-shot over all (colour, shape) classes with the corpus'
    prompts (also over held-out and seen pairs separately) and 5-caption retrieval.
  * ``eval.datasets`` (comma-separated string or list): further datasets as in
    ``python -m align_tf.evaluate --dataset`` (``tfrecord:GLOB``, TFDS names), running their
    ``auto`` tasks on at most ``eval.max_examples`` images (default 1000).
  * ``eval.templates`` (default ``"auto"``), ``eval.periodic_examples_per_class`` (synthetic images
    per class, default 10), ``eval.tfds_data_dir`` (default TFDS's).

Images are preprocessed like training's evaluation crop (``data.image_size``/``data.resize_size``).
The model is called outside any ``strategy.run`` (default or cross-replica context): fine on one
device and with ``MirroredStrategy``; with ``TPUStrategy`` evaluate the exported SavedModel instead.
"""

from __future__ import annotations

from typing import Callable

from align_tf.evaluation import datasets
from align_tf.evaluation.embed import KerasEncoder
from align_tf.evaluation.runner import EvalOptions, build_evaluators


def _dataset_names(config) -> list:
    names = [datasets.SYNTHETIC] if config.data.get("name", "synthetic") == "synthetic" else []
    extra = config.get("eval", {}).get("datasets", "") if config.get("eval") else ""
    if isinstance(extra, str):
        extra = [n.strip() for n in extra.split(",")]
    return names + [n for n in extra if n and n not in names]


def make_periodic_evaluator(config, preprocessor, batch_size: int = 256) -> Callable:
    """Returns ``fn(model) -> dict[str, float]`` with keys ``"{dataset}/{task}/{metric}"``.

    Evaluation data is built once here (synthetic images rendered once); every call re-embeds it
    with the model's current weights. Counts (``num_*``) are left out: they are not curves.

    Args:
      config: the training config (``data`` and optional ``eval`` fields, see module docstring).
      preprocessor: the run's ``TextPreprocessor``.
      batch_size: embedding batch size.
    """
    eval_config = config.get("eval") or {}
    opts = EvalOptions(
        max_examples=eval_config.get("max_examples", 1000),
        templates=eval_config.get("templates", "auto"),
        synthetic_examples_per_class=eval_config.get("periodic_examples_per_class", 10),
        synthetic_retrieval_rounds=1,
        data_dir=eval_config.get("tfds_data_dir", None),
        download=False)  # never start a download from inside a training job
    evaluators = [(name, build_evaluators(name, ["auto"], opts)) for name in _dataset_names(config)]
    current = []  # the encoder of the last model, whose traced tf.functions are reused

    def evaluate(model) -> dict:
        if not current or current[0].model is not model:
            current[:] = [KerasEncoder(model, preprocessor, config.data.image_size,
                                       config.data.get("resize_size"), batch_size)]
        encoder = current[0]
        out = {}
        for name, tasks in evaluators:
            for task, evaluator in tasks:
                for key, value in evaluator.run(encoder).items():
                    if not key.startswith("num_"):
                        out[f"{name}/{task}/{key}"] = float(value)
        return out

    return evaluate
