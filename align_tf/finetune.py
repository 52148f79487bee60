"""Fine-tunes a trained or converted ALIGN model: the paper's transfer recipes (§5) and LiT.

    python -m align_tf.finetune --init=RUN --task=classification --model_dir=OUT [--dataset=tfds:cifar10]
    python -m align_tf.finetune --init=RUN --task=lit --model_dir=OUT
    python -m align_tf.finetune --init=RUN --task=retrieval --model_dir=OUT --dataset=tfrecord:GLOB

``--init`` is a run directory: a training ``--model_dir`` or ``align_tf.convert.hf_align`` output
(``config.json``, ``vocab.txt``, ``checkpoints/``). The model section, the vocabulary and, for
retrieval, the objective come from it; everything else from the preset (``--config``, default
``configs/finetune_{task}.py``; any field overridable with ``--config.SECTION.FIELD=value``).

Tasks:

* ``classification``: the image tower plus a new linear head on its L2-normalised embedding
  (``align_tf.models.classifier``), every weight trained, BatchNorm statistics frozen (inference
  mode; γ/β train). The head starts from the zero-shot classifier (``finetune.head_init``), so
  step 0 has zero-shot accuracy. Data: ``synthetic`` (the 30 colour/shape classes; the linear
  probe's images) or a TFDS set with an image and a class label (``tfds:cifar10``); scored on
  the test split into ``OUT/eval.json``; ``OUT/savedmodel`` has ``classify`` and
  ``image_embed``.
* ``lit``: the image tower locked (``align_tf.objectives.lit``), the text tower trained with the
  contrastive loss, freshly initialised (``finetune.text_tower = "fresh"``) or from ``--init``.
* ``retrieval``: both towers with the ``--init`` run's objective (softmax or sigmoid; or another
  one, ``--config.finetune.objective=sigmoid`` e.g. for SigLIP's loss on align-base), on our
  shards (``--dataset=tfrecord:GLOB``), the synthetic corpus, or any caption source the trainer
  reads (``data.name``: ``tfds:coco_captions/train+restval`` is MSCOCO's Karpathy train split,
  one random caption per image per epoch).

``--dataset`` is spelt as everywhere (``align_tf.data.sources``); the task hooks are in
``align_tf.finetune_tasks``.

Training is ``align_tf.trainer.train`` with its steps replaced (``trainer.TrainHooks``):
checkpoints, resume (rerun the same command), distribution strategies, TensorBoard and the
progress bar are the trainer's. ``lit`` and ``retrieval`` end like ``align_tf.train`` (the
config's evaluators into ``eval.json``, the usual SavedModel).
"""

from __future__ import annotations

import copy
import os
import sys

# The task hooks (TensorFlow is imported inside them, so --help answers at once).
from align_tf.finetune_tasks import (ClassificationTask, DualEncoderTask,  # noqa: F401
                                     classifier_accuracy, classifier_logits)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TASKS = ("classification", "lit", "retrieval")
HEAD_INITS = ("zeroshot", "zeros")
TEXT_TOWERS = ("fresh", "init")


class InitError(ValueError):
    """``--init`` is not a run directory fine-tuning can start from; one line for the user."""


def check_init(init: str):
    """The ``RunDir`` of ``init``, or ``InitError`` saying in one line what is wrong with it."""
    import tensorflow as tf

    from align_tf.run_dir import RunDir
    if not init:
        raise InitError("--init is required: a training --model_dir or converted weights")
    if not tf.io.gfile.isdir(init):
        raise InitError(f"--init={init} does not exist" if not tf.io.gfile.exists(init)
                        else f"--init={init} is a file, not a run directory")
    run = RunDir(init)
    if not tf.io.gfile.exists(run.config_path):
        if tf.io.gfile.exists(os.path.join(init, "saved_model.pb")):
            raise InitError(f"--init={init} is a SavedModel; fine-tuning starts from a run "
                            "directory (config.json, vocab.txt, checkpoints/): the --model_dir it "
                            "was exported from, or align_tf.convert.hf_align output")
        raise InitError(f"--init={init} is not a run directory (no config.json)")
    if not run.has_vocabulary():
        raise InitError(f"--init={init} has no vocab.txt")
    if not run.latest_checkpoint():
        raise InitError(f"--init={init} has no checkpoint in {run.checkpoint_dir}")
    return run


def make_config(preset, init: str, task: str, dataset: str | None = None):
    """The fine-tuning config: ``preset`` with the ``--init`` run's model, vocabulary, token length,
    image sizes (unless ``finetune.image_size`` sets them) and, for retrieval, objective.

    ``dataset``: a data source (``align_tf.data.sources``): classification: ``finetune.dataset``
    (``synthetic``, ``tfds:cifar10``); otherwise ``data.name`` (``synthetic``, ``tfrecord:GLOB``,
    ``tfds:coco_captions/train+restval``).
    """
    import ml_collections

    run = check_init(init)
    try:
        init_config = run.load_config()
    except ValueError as e:
        raise InitError(f"--init: {e}") from None
    config = ml_collections.ConfigDict(copy.deepcopy(preset.to_dict()))
    f = config.finetune
    f.task, f.init = task, os.path.abspath(init) if "://" not in init else init
    config.model = ml_collections.ConfigDict(init_config.model.to_dict())
    if task == "retrieval":  # the loss the model was trained with (softmax or sigmoid) …
        objective = f.objective
        config.objective = ml_collections.ConfigDict(init_config.objective.to_dict())
        if objective:  # … or another one on the same towers (finetune.objective)
            config.objective.name = objective
            from align_tf import objectives
            config.model.similarity = objectives.model_similarity(objective)  # its registry's
    d = config.data
    d.max_tokens, d.vocab_size = init_config.data.max_tokens, init_config.data.vocab_size
    with d.ignore_type():
        if f.image_size:
            d.image_size, d.resize_size = f.image_size, f.resize_size
        else:
            d.image_size, d.resize_size = init_config.data.image_size, init_config.data.resize_size
    if not (task == "lit" and f.text_tower == "fresh" and d.vocab_path):
        d.vocab_path = run.vocab_path  # the text tower's vocabulary (a fresh LiT tower may differ)
    if dataset:  # one spelling, as training and evaluation write it (align_tf.data.sources)
        if task == "classification":
            f.dataset = dataset
        else:
            d.name = dataset
    return config


def validate(config, num_replicas: int = 1) -> None:
    """``trainer.validate_config`` plus the ``finetune`` section; one-line ``ConfigError``."""
    from align_tf import trainer
    f = config.finetune
    error = trainer.ConfigError
    if f.task not in TASKS:
        raise error(f"unknown finetune.task {f.task!r}; choose from {list(TASKS)}")
    if f.head_init not in HEAD_INITS:
        raise error(f"unknown finetune.head_init {f.head_init!r}; choose from {list(HEAD_INITS)}")
    if f.text_tower not in TEXT_TOWERS:
        raise error(f"unknown finetune.text_tower {f.text_tower!r}; choose from "
                    f"{list(TEXT_TOWERS)}")
    if not 0.0 <= f.label_smoothing < 1.0:
        raise error(f"finetune.label_smoothing={f.label_smoothing} must be in [0, 1)")
    for name in ("image_size", "eval_image_size", "shuffle_buffer"):
        if f[name] is not None and f[name] <= 0:
            raise error(f"finetune.{name}={f[name]} must be positive")
    if f.task == "classification" and config.eval.every_steps:
        raise error("eval.every_steps must be 0 for classification (the classifier is scored "
                    "on its test split at the end)")
    if f.objective and f.task != "retrieval":
        raise error(f"finetune.objective={f.objective!r} applies to --task=retrieval only")
    if f.task == "lit" and (config.objective.name != "contrastive" or
                            config.model.similarity != "softmax"):
        raise error("lit trains with objective.name='contrastive' and model.similarity='softmax'")
    trainer.validate_config(config, num_replicas)


# ---------------------------------------------------------------------------------- driver


def check_model_dir(config, model_dir: str) -> None:
    """A ``model_dir`` being resumed must continue the same task from the same architecture."""
    import tensorflow as tf

    from align_tf import trainer
    from align_tf.run_dir import RunDir
    run = RunDir(model_dir)
    if not tf.io.gfile.exists(run.config_path):
        return
    saved = run.load_config()
    if saved.finetune.task != config.finetune.task:
        raise trainer.ConfigError(
            f"--model_dir={model_dir} holds a {saved.finetune.task or 'training'} run, not "
            f"{config.finetune.task} fine-tuning; use a new --model_dir")
    saved_model, model = saved.model.to_dict(), config.model.to_dict()
    if saved_model != model:
        changed = sorted(k for k in set(saved_model) | set(model)
                         if saved_model.get(k) != model.get(k))
        raise trainer.ConfigError(
            f"--model_dir={model_dir} was fine-tuned from another architecture (model."
            f"{', model.'.join(changed)} differ from --init's); use a new --model_dir")


def finetune(config, model_dir: str, strategy=None, verbose: int = 1) -> dict:
    """Fine-tunes (or resumes) as ``config`` says, evaluates and exports; returns
    ``{"train": TrainResult, "eval": report or None, "savedmodel": path or None}``."""
    import tensorflow as tf

    from align_tf import distribute, trainer
    from align_tf.export import config_export_kwargs, export_saved_model
    from align_tf.run_dir import RunDir

    strategy = strategy or tf.distribute.get_strategy()
    validate(config, strategy.num_replicas_in_sync)
    check_model_dir(config, model_dir)
    classification = config.finetune.task == "classification"
    task = ClassificationTask(config) if classification else DualEncoderTask(config)
    result = trainer.train(config, model_dir, strategy, verbose=verbose, hooks=task.hooks())
    out = {"train": result, "eval": None, "savedmodel": None}
    if not distribute.is_chief(strategy):
        return out
    model = result.model
    if config.finetune.task == "lit":
        model.image_encoder.trainable = True  # exported towers stay fine-tunable by consumers
    if config.eval.enabled:
        out["eval"] = task.evaluate(model, model_dir) if classification else \
            trainer.evaluate(result, config, model_dir)
    if config.export.enabled:
        path = RunDir(model_dir).savedmodel_path
        out["savedmodel"] = task.export(model, path) if classification else export_saved_model(
            model, result.preprocessor, path, config=config, **config_export_kwargs(config))
    return out


# ---------------------------------------------------------------------------------- CLI


def _argv_value(argv, name: str):
    """The value of ``--name=V`` or ``--name V`` in ``argv`` (None if absent)."""
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _prepare_argv(argv):
    """``(argv, config, its name)``: the ``--config`` preset (``configs.take_config_arg``: a
    fine-tuning preset, default ``finetune_{task}``, a config file or a run's ``config.json``)
    read and taken out of ``argv``, and unknown ``--config.FIELD`` overrides rejected in one
    line, before ``config_flags`` reads ``sys.argv`` (an unknown field is a KeyError traceback
    there)."""
    from align_tf.configs import FINETUNE_PRESETS, take_config_arg, unknown_field
    for arg in argv:
        if arg.startswith("--config."):
            problem = unknown_field(arg[len("--config."):].split("=")[0])
            if problem:
                sys.exit(f"align_tf.finetune: error: {problem}")
    task = _argv_value(argv, "task")
    default = f"finetune_{task}" if task in TASKS else "finetune_classification"
    try:
        return take_config_arg(argv, default, FINETUNE_PRESETS)
    except ValueError as e:
        sys.exit(f"align_tf.finetune: error: {e}")


def main(argv):
    """The absl entry point: fine-tune, evaluate, export; errors as one line."""
    from absl import flags
    f = flags.FLAGS
    if len(argv) > 1:
        sys.exit(f"align_tf.finetune: error: unexpected arguments {argv[1:]}")
    try:
        return _main(f)
    except SystemExit:
        # A failed restore leaves the half-restored model to log a warning per unrestored value
        # when it is collected at exit: hundreds of lines after the one that says what is wrong.
        if "tensorflow" in sys.modules:  # (a mistake found before the import costs no import)
            sys.modules["tensorflow"].get_logger().setLevel("ERROR")
        raise


def _main(f):
    from align_tf import cli
    for problem in (cli.directory_problem("model_dir", f.model_dir), cli.tpu_problem(f.tpu)):
        if problem:  # before TensorFlow is imported: one line at once
            sys.exit(f"align_tf.finetune: error: {problem}")
    from align_tf import distribute, trainer
    try:
        config = make_config(f.config, f.init, f.task, f.dataset)
        if f.train_steps is not None:
            config.train.steps = f.train_steps
        strategy = distribute.get_strategy(f.strategy, f.tpu)
        out = finetune(config, f.model_dir, strategy)
    except (InitError, trainer.ConfigError, distribute.StrategyError, FileNotFoundError) as e:
        sys.exit(f"align_tf.finetune: error: {e}")
    except ValueError as e:  # e.g. a checkpoint of another architecture (run_dir.restore_model)
        line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        sys.exit(f"align_tf.finetune: error: {line}")
    except trainer.Preempted as e:
        sys.exit(f"align_tf.finetune: preempted: {e}. Rerun the same command to resume.")
    except FloatingPointError as e:
        sys.exit(f"align_tf.finetune: error: {e}")
    if out["eval"]:
        for dataset, tasks in out["eval"]["results"].items():
            for name, metrics in tasks.items():
                print(f"eval {dataset} {name}:", ", ".join(
                    f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    if out["savedmodel"]:
        print(f"exported SavedModel to {out['savedmodel']}")


def run():
    """Console entry point: ``python -m align_tf.finetune --init=RUN --task=T --model_dir=OUT``."""
    from absl import flags
    from ml_collections import config_flags

    from align_tf import cli
    sys.argv[1:], config, name = _prepare_argv(sys.argv[1:])
    config_flags.DEFINE_config_dict(
        "config", config, "Fine-tuning preset (finetune_classification, finetune_vtab, "
        "finetune_lit, finetune_retrieval, finetune_retrieval_paper; default finetune_{task}), "
        "a path to a config .py file or a run's config.json; fields overridable, e.g. "
        "--config.train.steps=100.",
        lock_config=False)
    flags.DEFINE_string("init", None, "Run directory to start from: a training --model_dir or "
                        "align_tf.convert.hf_align output.", required=True)
    flags.DEFINE_enum("task", None, list(TASKS), "What to fine-tune.", required=True)
    flags.DEFINE_string("dataset", None, "A data source (align_tf.data.sources). "
                        "classification: synthetic or a labelled TFDS set, tfds:cifar10 "
                        "(finetune.dataset); lit/retrieval: synthetic, tfrecord:GLOB, "
                        "tfds:NAME[/split] (data.name). Default: the preset's.")
    flags.DEFINE_string("model_dir", None, "Output run directory (rerun to resume).",
                        required=True)
    flags.DEFINE_enum("strategy", "auto", ["auto", "tpu", "multi_worker", "mirrored",
                                           "one_device"], "Distribution strategy (as train).")
    flags.DEFINE_string("tpu", None, "Cloud TPU name, grpc://address or 'local'.")
    flags.DEFINE_integer("train_steps", None, "Overrides config.train.steps.")
    from align_tf.training import progress
    progress.config_name = name  # for the start banner
    cli.run(__name__, main, argv=sys.argv)


if __name__ == "__main__":
    run()
