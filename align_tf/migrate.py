"""Every piece of backward compatibility, in one place: old ``config.json`` files, old command-line
spellings and old checkpoints still load, each through one function here.

Sections (one per kind of old thing; each function says which release changed it):
  * config fields (``config_json``): what ``RunDir.load_config`` applies to an old ``config.json``.
  * command-line spellings (``config_flag``): old ``--config.SECTION.FIELD`` flags, rewritten with a
    one-line deprecation notice.
  * data source spellings (``source_spec``): old ``data.name`` / ``--dataset`` values.
  * evaluation (``eval_section``): the flat ``eval.datasets`` × ``eval.tasks`` fields.
  * checkpoints (``checkpoint_view``): objects laid out as older trainers wrote them.

Nothing outside this module knows an old spelling; code elsewhere calls these and sees today's.
"""

from __future__ import annotations

import re
import sys


def notice(message: str) -> None:
    """Prints one deprecation line (``align_tf: deprecated: …``) on stderr."""
    print(f"align_tf: deprecated: {message}", file=sys.stderr)


# ------------------------------------------------------------------------------- config fields

# Fields of the ``model`` section before the objectives split → their (flat) ``objective`` name.
# The boolean ``model.momentum_distillation`` became ``objective.name``.
LEGACY_MODEL_FIELDS = {
    "label_smoothing": "label_smoothing",
    "distillation_momentum": "momentum",
    "distillation_alpha": "alpha",
    "distillation_alpha_ramp_steps": "alpha_ramp_steps",
    "distillation_queue_size": "queue_size",
}
# Renamed eval fields: old name → new name.
LEGACY_EVAL_FIELDS = {"num_examples_per_class": "synthetic_examples_per_class"}


def objective_sections(field: str) -> list:
    """The objectives whose section ``objective.<name>`` (``configs/base.py``) has ``field``.

    Before [house] every objective read one flat ``objective`` section: a flat field meant the
    same thing to whichever objective was named, so it goes to each section that has it."""
    from align_tf.configs import base
    return [name for name, section in base.get_config().objective.items()
            if hasattr(section, "keys") and field in section]


def config_json(config):
    """Today's config (a ``ConfigDict``) from a ``config.json`` written by any release (a dict or
    ``ConfigDict``), on top of ``configs/base.py``'s defaults for any section or field it lacks
    (``RunDir.load_config``).

    * objectives split: ``model.momentum_distillation`` → ``objective.name``,
      ``model.distillation_*`` and ``model.label_smoothing`` → the objective's fields;
      ``model.sync_batch_norm`` → ``model.bn_group_size``;
    * [house]: flat ``objective.FIELD`` → ``objective.<name>.FIELD`` of every objective that has
      it (``objective_sections``); flat ``eval.datasets`` × ``eval.tasks`` and evaluator fields
      → ``eval.evaluators`` (``eval_section``); ``eval.num_examples_per_class`` renamed.
    """
    from align_tf.configs import base
    import copy
    # A copy: the caller's dict stays as it was read.
    data = config.to_dict() if hasattr(config, "to_dict") else copy.deepcopy(dict(config))
    model = data.get("model", {})
    if "sync_batch_norm" in model:  # the boolean before BatchNorm groups: all replicas or each
        model["bn_group_size"] = -1 if model.pop("sync_batch_norm") else 0
    if "momentum_distillation" in model or any(k in model for k in LEGACY_MODEL_FIELDS):
        objective = data.setdefault("objective", {})
        if model.pop("momentum_distillation", False):
            objective["name"] = "momentum_distillation"
        for old, new in LEGACY_MODEL_FIELDS.items():
            if old in model:
                objective[new] = model.pop(old)
    objective = data.get("objective", {})
    for field in [k for k, v in objective.items() if k != "name" and not isinstance(v, dict)]:
        sections = objective_sections(field)
        for name in sections:  # a field no objective has is kept as given
            objective.setdefault(name, {})[field] = objective[field]
        if sections:
            del objective[field]
    evaluation = data.get("eval", {})
    for old, new in LEGACY_EVAL_FIELDS.items():
        if old in evaluation:
            evaluation[new] = evaluation.pop(old)
    eval_section(data)
    merged = base.get_config()
    if "evaluators" in evaluation:  # the run's evaluators replace the defaults' (never merged)
        merged.eval.evaluators = {}
    _update(merged, data)
    return merged


def _update(target, data: dict) -> None:
    """Writes ``data`` into ``target`` recursively; fields ``target`` lacks are kept as given."""
    import ml_collections
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(target.get(key), ml_collections.ConfigDict):
            _update(target[key], value)
        else:
            with target.ignore_type():
                target[key] = value


# ------------------------------------------------------------------------- command-line flags

# Fields moved by the objectives split: still a one-line error that names today's spelling
# (``config_flag``), as it was then; the flat ``objective.*`` ones name the nested sections.
MOVED_FLAGS = {
    "model.momentum_distillation": "objective.name=momentum_distillation",
    "model.label_smoothing": "objective.label_smoothing",
    "model.distillation_momentum": "objective.momentum",
    "model.distillation_alpha": "objective.alpha",
    "model.distillation_alpha_ramp_steps": "objective.alpha_ramp_steps",
    "model.distillation_queue_size": "objective.queue_size",
    "model.sync_batch_norm": "model.bn_group_size=-1",
}


def _flat_objective_field(field: str) -> tuple:
    """``(name, sections)`` if ``field`` is a flat ``objective.NAME`` spelling from before
    [house] (``objective_sections(NAME)`` non-empty), else ``(None, [])``."""
    section, _, name = field.partition(".")
    if section != "objective" or name == "name" or "." in name:
        return None, []
    return name, objective_sections(name)


def config_flag(arg: str) -> list:
    """Today's spelling of one ``--config.FIELD[=VALUE]`` argument, as a list of arguments.

    * a flat ``--config.objective.FIELD=V`` (before [house]) becomes
      ``--config.objective.<name>.FIELD=V`` for every objective whose section has the field, with
      one deprecation line on stderr naming the new spelling;
    * a field the objectives split moved (``MOVED_FLAGS``) is a ``ValueError`` naming today's
      spelling (one line);
    * anything else is returned as it is.
    """
    field, equals, value = arg[len("--config."):].partition("=")
    if field in MOVED_FLAGS:
        name, sections = _flat_objective_field(MOVED_FLAGS[field].partition("=")[0])
        spellings = [f"--config.objective.{s}.{name}" for s in sections] if name else \
            [f"--config.{MOVED_FLAGS[field]}"]
        raise ValueError(f"--config.{field} moved: use {' or '.join(spellings)}")
    name, sections = _flat_objective_field(field)
    if not sections:
        return [arg]
    new = [f"--config.objective.{s}.{name}{equals}{value}" for s in sections]
    notice(f"--config.{field} is now {' and '.join(a.partition('=')[0] for a in new)}")
    return new


# ----------------------------------------------------------------------- data source spellings

_SOURCE_NOTICES: set = set()  # each old spelling is named once per process
# data.name values that took their glob from data.train_pattern (before [house])
_PATTERN_SOURCES = ("tfrecord", "img2dataset_tfrecord")
# name[/config][:X.Y.Z][/split] ("*" allowed in a version): what TFDS itself accepts
_TFDS_NAME = re.compile(r"^[a-z][a-z0-9_]*(/[^:/]+)*(:[\d*]+(\.[\d*]+)+)?(/[^:/]+)?$")


def _source_notice(old: str, new: str) -> None:
    if (old, new) not in _SOURCE_NOTICES:
        _SOURCE_NOTICES.add((old, new))
        notice(f"{old} is now spelt {new!r}")


def source_spec(spec: str, registered: tuple) -> str | None:
    """Today's spelling of an old evaluation source name, or ``None``: a bare TFDS name
    (``cifar10``, ``oxford_iiit_pet:3.*.*``) is ``tfds:NAME`` since [house]."""
    if spec.split(":")[0].split("/")[0] in registered or not _TFDS_NAME.match(spec):
        return None
    _source_notice(f"dataset {spec!r}", f"tfds:{spec}")
    return f"tfds:{spec}"


def data_source_spec(data) -> str:
    """Today's spelling of a training source (``data``: the config's data section). Before
    [house] the glob was ``data.train_pattern`` (``data.name="tfrecord"``) and the TFDS split
    ``data.tfds_split`` (``data.name="tfds:NAME"``); today both are in the name:
    ``tfrecord:GLOB``, ``tfds:NAME/SPLIT``."""
    name = str(data.name).strip()
    if name in _PATTERN_SOURCES:
        new = f"{name}:{data.get('train_pattern', '')}"
        _source_notice(f"data.name={name!r} with data.train_pattern", new)
        return new
    split = data.get("tfds_split", "") or ""
    if name.startswith("tfds:") and split not in ("", "train") and name.count("/") < 2:
        new = f"{name}/{split}"
        _source_notice(f"data.name={name!r} with data.tfds_split", new)
        return new
    return name



# -------------------------------------------------------------------------------- evaluation

# The flat eval fields before [house], with their defaults then and the evaluator types that
# read them: a cross product (datasets × tasks) shared these; today they are eval.evaluators'.
_FLAT_EVAL_FIELDS = {
    "recall_ks": ("1,5,10", ("retrieval",)), "captions_per_image": (5, ("retrieval",)),
    "block_size": (512, ("retrieval",)), "faiss": (False, ("retrieval",)),
    "rerank_k": (0, ("retrieval", "zeroshot")), "templates": ("auto", ("zeroshot",)),
    "knn_k": (20, ("knn",)), "knn_temperature": (0.07, ("knn",)),
    "linear_backend": ("sklearn", ("linear",)), "linear_c": (None, ("linear",)),
}
_CROSS_PRODUCT = ("datasets", "tasks")
_AUTO_TYPES = ("retrieval", "zeroshot")  # what an "auto" task ran


def eval_section(data: dict) -> dict:
    """An old ``config.json``'s (a dict's) flat ``eval.datasets`` × ``eval.tasks`` and
    evaluator fields as today's ``eval.evaluators`` (``configs.evaluators_for``), each entry
    given the old fields its type read; the old ``eval.templates`` also gives
    ``finetune.templates`` (the zero-shot head's prompts were the evaluation's). Changes and
    returns ``data``."""
    from align_tf.configs import evaluators_for
    evaluation = data.get("eval") or {}
    old = {k: evaluation.pop(k) for k in (*_CROSS_PRODUCT, *_FLAT_EVAL_FIELDS) if k in evaluation}
    if not old or "evaluators" in evaluation:
        return data
    evaluators = evaluators_for(old.pop("datasets", "synthetic"), old.pop("tasks", "auto"))
    for entry in evaluators.values():
        types = _AUTO_TYPES if entry["type"] == "auto" else (entry["type"],)
        entry.update({k: v for k, v in old.items()
                      if k in _FLAT_EVAL_FIELDS and set(types) & set(_FLAT_EVAL_FIELDS[k][1])})
    evaluation["evaluators"] = evaluators
    if "templates" in old:
        data.setdefault("finetune", {}).setdefault("templates", old["templates"])
    return data


def eval_flags(argv: list) -> tuple:
    """``(argv without them, overrides)`` for the old flat ``--config.eval.FIELD=V`` flags
    (``datasets``, ``tasks`` and ``_FLAT_EVAL_FIELDS``), one deprecation line each; apply the
    overrides with ``runner.with_eval_overrides``, which rebuilds or updates ``eval.evaluators``
    as the evaluate CLI's flags of the same names do."""
    rest, overrides = [], {}
    for arg in argv:
        name, eq, value = arg.partition("=")
        field = name[len("--config.eval."):] if name.startswith("--config.eval.") else ""
        if not eq or field not in (*_CROSS_PRODUCT, *_FLAT_EVAL_FIELDS):
            rest.append(arg)
            continue
        notice(f"--config.eval.{field} now builds eval.evaluators (their {field} cross product)"
               if field in _CROSS_PRODUCT else
               f"--config.eval.{field} is now a field of the eval.evaluators entries "
               f"(--config.eval.evaluators.NAME.{field}); applied to every entry that has it")
        try:
            overrides[field] = value if field in _CROSS_PRODUCT else \
                _parse_like(value, _FLAT_EVAL_FIELDS[field][0])
        except ValueError:
            raise ValueError(f"--config.eval.{field}: cannot parse {value!r}") from None
    return rest, overrides


def _parse_like(value: str, default):
    """A command-line string as the type of ``default`` (None: a float, or None for 'None')."""
    if isinstance(default, bool):
        return value.strip().lower() in ("1", "true", "yes")
    if isinstance(default, int):
        return int(value)
    if default is None or isinstance(default, float):
        return None if value.strip() in ("", "None", "none") else float(value)
    return value


# ------------------------------------------------------------------------------- checkpoints

def checkpoint_view(objective, keys) -> tuple | None:
    """``(tf.train.Checkpoint, note)`` that restores a checkpoint with entries ``keys`` laid out
    as trainers before the objectives split wrote it, or ``None`` for today's layout
    (``training.checkpoint.restore`` restores either, checking both directions).

    Then the skip counters, momentum towers and queue were variables of the model: under the key
    ``model`` sat the towers and σ next to what is now ``objective.state``. ``note`` goes into the
    error message if the checkpoint does not match the config."""
    if not any(k.startswith("model/skipped_steps") for k in keys):
        return None
    import tensorflow as tf
    from align_tf import compat
    view = compat.AutoTrackable()
    for name in ("image_encoder", "text_encoder", "temperature"):
        setattr(view, name, getattr(objective.model, name))
    for name, value in compat.trackable_children(objective.state).items():
        setattr(view, name, value)
    return (tf.train.Checkpoint(model=view, optimizer=objective.optimizer),
            "was written before align_tf's objectives split and ")
