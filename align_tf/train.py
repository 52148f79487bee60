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

from align_tf import cli  # noqa: E402
from align_tf.configs import (  # noqa: E402
    PRESETS, default_model_dir, take_config_arg, unknown_field)

PROG = "align_tf.train"


def _rewrite_config_arg(argv):
    """Old ``--config.FIELD`` spellings → today's (``align_tf.migrate.config_flag``: a
    deprecation line, or a one-line error naming the new spelling of a moved field); unknown
    fields are one-line errors. ``--config.objective.name=N`` also sets the
    ``model.similarity`` objective N trains unless the command line sets it."""
    from align_tf import migrate
    out, overridden = [], {}
    for arg in argv:
        if arg.startswith("--config."):
            try:
                rewritten = migrate.config_flag(arg)
            except ValueError as e:
                sys.exit(f"{PROG}: error: {e}")
            for new in rewritten:
                field, _, value = new[len("--config."):].partition("=")
                problem = unknown_field(field)  # config_flags would raise a bare KeyError
                if problem:
                    sys.exit(f"{PROG}: error: {problem}")
                overridden[field] = value
            out += rewritten
            continue
        out.append(arg)
    # An objective that trains another similarity than the default softmax's σ (sigmoid: the
    # model's t′ and b) picks that model too (validate_config still rejects an explicit mismatch).
    if "objective.name" in overridden and "model.similarity" not in overridden:
        from align_tf import objectives  # its registry: loads TensorFlow, only on this path
        similarity = objectives.model_similarity(overridden["objective.name"])
        if similarity != "softmax":
            out.append(f"--config.model.similarity={similarity}")
    return out


def _define_flags(config, model_dir: str) -> None:
    """The command's flags: ``config`` (``configs.take_config_arg``) with one
    ``--config.SECTION.FIELD`` flag per field (config_flags reads them from ``sys.argv`` while
    ``--config`` is defined, so ``run`` rewrites ``sys.argv`` first)."""
    from ml_collections import config_flags
    config_flags.DEFINE_config_dict(
        "config", config,
        f"Training config: a preset name ({', '.join(PRESETS)}), a path to a config .py file, or "
        "a run's config.json (train again with its config). Fields are overridable, e.g. "
        "--config.train.batch_size=256.", lock_config=True)
    flags.DEFINE_string("model_dir", model_dir,
                        "Where checkpoints, TensorBoard logs, eval.json and the SavedModel go "
                        "(default: align_runs/<config name>).")
    flags.DEFINE_string("tpu", None, "Cloud TPU name, grpc://address, or 'local' on a TPU VM "
                        "(implies --strategy=tpu under auto).")
    flags.DEFINE_enum("strategy", "auto", ["auto", "tpu", "multi_worker", "mirrored", "one_device"],
                      "Distribution strategy; auto picks TPU, multi-worker (TF_CONFIG), "
                      "mirrored (several GPUs) or one device.")
    flags.DEFINE_integer("train_steps", None, "Overrides config.train.steps.")
    flags.DEFINE_string("export_dir", None, "SavedModel path; default {model_dir}/savedmodel.")


def main(argv, eval_overrides: dict | None = None):
    """``eval_overrides``: the old flat ``--config.eval.FIELD`` flags (``migrate.eval_flags``),
    applied to the config's evaluators as the evaluate CLI's flags of those names are."""
    del argv
    f = flags.FLAGS
    for problem in (cli.directory_problem("model_dir", f.model_dir),
                    cli.directory_problem("export_dir", f.export_dir), cli.tpu_problem(f.tpu)):
        if problem:  # before TensorFlow is imported: one line at once
            sys.exit(f"{PROG}: error: {problem}")
    from align_tf import distribute, trainer
    from align_tf.evaluation import runner
    from align_tf.export import config_export_kwargs, export_saved_model
    from align_tf.run_dir import RunDir
    from align_tf.training import progress

    config = f.config
    if eval_overrides:
        try:
            config = runner.with_eval_overrides(config, **eval_overrides)
        except ValueError as e:
            sys.exit(f"{PROG}: error: {e}")
    if f.train_steps is not None:
        with config.unlocked():
            config.train.steps = f.train_steps
    try:
        # First: MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs.
        strategy = distribute.get_strategy(f.strategy, f.tpu)
    except distribute.StrategyError as e:
        sys.exit(f"{PROG}: error: {e}")
    except OSError as e:  # the TPU resolver's metadata look-up (URLError), off Google Cloud
        sys.exit(f"{PROG}: error: cannot find TPU {f.tpu!r}: {e}")
    try:
        result = trainer.train(config, f.model_dir, strategy)
    except (trainer.ConfigError, FileNotFoundError) as e:
        sys.exit(f"{PROG}: error: {e}")
    except trainer.Preempted as e:
        sys.exit(f"{PROG}: preempted: {e}. Rerun the same command to resume.")
    except FloatingPointError as e:
        sys.exit(f"{PROG}: error: {e}")
    if not distribute.is_chief(strategy):
        return  # eval and export are the chief's; other workers are done
    if config.eval.enabled:
        if result.plans is not None:
            progress.announce_plans(result.plans)
        report = trainer.evaluate(result, config, f.model_dir)
        for dataset, tasks in report["results"].items():
            for task, metrics in tasks.items():
                for line in eval_lines(f"eval {dataset} {task}", metrics):
                    print(line)
    if config.export.enabled:
        # The same function as `python -m align_tf.export`: evaluation image sizes and the
        # config's prompt templates (default CLIP's 80) are baked into the SavedModel.
        path = export_saved_model(result.model, result.preprocessor,
                                  f.export_dir or RunDir(f.model_dir).savedmodel_path,
                                  config=config, **config_export_kwargs(config))
        print(f"exported SavedModel to {path}")


def eval_lines(label: str, metrics: dict, most: int = 12):
    """One console line per level of an evaluator's (possibly nested) metrics: the floats of
    ``metrics`` after ``label``, then each sub-dict (a shift style, a language) on its own line.
    Beyond ``most`` sub-dicts (cross-lingual language pairs) only ``mean`` is printed; eval.json
    has them all."""
    floats = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    if floats:
        yield f"{label}: {floats}"
    subs = {k: v for k, v in metrics.items() if isinstance(v, dict)}
    if len(subs) > most and "mean" in subs:
        yield f"{label}: {len(subs) - 1} more in eval.json"
        subs = {"mean": subs["mean"]}
    for key, value in subs.items():
        yield from eval_lines(f"{label} {key}", value, most)


def run():
    """The entry point of ``python -m align_tf.train`` and ``align-train``: imports ``--plugins``
    (their objectives may imply a model), rewrites ``sys.argv`` (old flat ``--config.eval.*``
    flags: ``migrate.eval_flags``; ``_rewrite_config_arg``), then defines the flags and runs
    ``main``."""
    from align_tf import migrate
    cli.import_plugins(PROG, sys.argv)
    try:  # config_flags cannot take the flat eval fields the evaluators replaced: main applies them
        sys.argv[1:], eval_overrides = migrate.eval_flags(sys.argv[1:])
    except ValueError as e:
        sys.exit(f"{PROG}: error: {e}")
    try:  # the config file is read now: a bad one is one line before TensorFlow is imported
        sys.argv[1:], config, name = take_config_arg(_rewrite_config_arg(sys.argv[1:]),
                                                     "default")
    except ValueError as e:
        sys.exit(f"{PROG}: error: {e}")
    _define_flags(config, default_model_dir(name))
    from align_tf.training import progress
    progress.config_name = name  # for the start banner
    cli.run(__name__, lambda argv: main(argv, eval_overrides), argv=sys.argv)


if __name__ == "__main__":
    run()
