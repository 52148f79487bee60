"""Trains an ALIGN dual encoder, then evaluates and exports it.

With no flags it trains the embedded tiny default on the built-in synthetic corpus (CPU, a few
minutes), writes eval.json and exports a SavedModel.

Examples:
  python -m align_tf.train
  python -m align_tf.train --config=paper --tpu=my-tpu --model_dir=gs://bucket/run
  python -m align_tf.train --config=default --config.train.steps=300 --train_steps=100
  python -m align_tf.train --config=paper --tpu=local --model_dir=gs://bucket/run   # on a TPU VM
  TF_CONFIG='{"cluster": {"worker": ["h0:2222", "h1:2222"]}, "task": {"type": "worker", "index": 0}}' \
    python -m align_tf.train --strategy=multi_worker --model_dir=/shared/run       # on every host

Rerunning the same command after a crash or preemption (SIGTERM) resumes from the newest checkpoint.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from align_tf import cli  # noqa: E402
from align_tf.configs import PRESETS, preset_path, unknown_field  # noqa: E402


# Fields moved by the objectives split: config_flags would reject them with a bare KeyError.
_MOVED_FIELDS = {
    "model.momentum_distillation": "objective.name=momentum_distillation",
    "model.label_smoothing": "objective.label_smoothing",
    "model.distillation_momentum": "objective.momentum",
    "model.distillation_alpha": "objective.alpha",
    "model.distillation_alpha_ramp_steps": "objective.alpha_ramp_steps",
    "model.distillation_queue_size": "objective.queue_size",
    "model.sync_batch_norm": "model.bn_group_size=-1",
}


def _config_field_error(field: str) -> str | None:
    """Why ``--config.{field}=…`` cannot apply, or None. config_flags resolves overrides while
    the flag is defined (at import), and an unknown field is a KeyError traceback there."""
    if field in _MOVED_FIELDS:
        return f"--config.{field} moved: use --config.{_MOVED_FIELDS[field]}"
    return unknown_field(field)


def _rewrite_config_arg(argv):
    """``--config=NAME`` → the preset's file path, so config_flags can load it; unknown or moved
    ``--config.FIELD`` overrides are one-line errors (naming the new spelling of a moved one)."""
    out, overridden = [], {}
    for arg in argv:
        if arg.startswith("--config."):
            field, _, value = arg[len("--config."):].partition("=")
            problem = _config_field_error(field)
            if problem:
                sys.exit(f"align_tf.train: error: {problem}")
            overridden[field] = value
        if arg.startswith("--config="):
            try:
                arg = "--config=" + preset_path(arg[len("--config="):])
            except ValueError as e:
                sys.exit(f"align_tf.train: error: {e}")
        out.append(arg)
    # An objective that trains another similarity than the default softmax's σ (sigmoid: the
    # model's t′ and b) picks that model too (validate_config still rejects an explicit mismatch).
    if "objective.name" in overridden and "model.similarity" not in overridden:
        from align_tf import objectives  # its registry: loads TensorFlow, only on this path
        similarity = objectives.model_similarity(overridden["objective.name"])
        if similarity != "softmax":
            out.append(f"--config.model.similarity={similarity}")
    return out


# config_flags reads sys.argv when the flag is defined: check and rewrite it first.
sys.argv[1:] = _rewrite_config_arg(sys.argv[1:])
_CONFIG = config_flags.DEFINE_config_file(
    "config", preset_path("default"),
    f"Training config: a preset name ({', '.join(PRESETS)}) or a path to a config .py file. "
    "Fields are overridable, e.g. --config.train.batch_size=256.", lock_config=True)
_MODEL_DIR = flags.DEFINE_string("model_dir", "align_runs/default",
                                 "Where checkpoints, TensorBoard logs, eval.json and the SavedModel go.")
_TPU = flags.DEFINE_string("tpu", None, "Cloud TPU name, grpc://address, or 'local' on a TPU VM "
                           "(implies --strategy=tpu under auto).")
_STRATEGY = flags.DEFINE_enum("strategy", "auto", ["auto", "tpu", "multi_worker", "mirrored", "one_device"],
                              "Distribution strategy; auto picks TPU, multi-worker (TF_CONFIG), "
                              "mirrored (several GPUs) or one device.")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", None, "Overrides config.train.steps.")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "SavedModel path; default {model_dir}/savedmodel.")


def main(argv):
    del argv
    from align_tf import distribute, trainer
    from align_tf.export import config_export_kwargs, export_saved_model
    from align_tf.run_dir import RunDir

    config = _CONFIG.value
    if _TRAIN_STEPS.value is not None:
        with config.unlocked():
            config.train.steps = _TRAIN_STEPS.value
    try:
        # First: MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs.
        strategy = distribute.get_strategy(_STRATEGY.value, _TPU.value)
        result = trainer.train(config, _MODEL_DIR.value, strategy)
    except (trainer.ConfigError, distribute.StrategyError, FileNotFoundError) as e:
        sys.exit(f"align_tf.train: error: {e}")
    except trainer.Preempted as e:
        sys.exit(f"align_tf.train: preempted: {e}. Rerun the same command to resume.")
    except FloatingPointError as e:
        sys.exit(f"align_tf.train: error: {e}")
    if not distribute.is_chief(strategy):
        return  # eval and export are the chief's; other workers are done
    if config.eval.enabled:
        report = trainer.evaluate(result, config, _MODEL_DIR.value)
        for dataset, tasks in report["results"].items():
            for task, metrics in tasks.items():
                print(f"eval {dataset} {task}:", ", ".join(
                    f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    if config.export.enabled:
        # The same function as `python -m align_tf.export`: evaluation image sizes and the
        # config's prompt templates (default CLIP's 80) are baked into the SavedModel.
        path = export_saved_model(result.model, result.preprocessor,
                                  _EXPORT_DIR.value or RunDir(_MODEL_DIR.value).savedmodel_path,
                                  config=config, **config_export_kwargs(config))
        print(f"exported SavedModel to {path}")


def run():
    """Console entry point (``align-train``)."""
    cli.run(__name__, main, argv=sys.argv)


if __name__ == "__main__":
    run()
