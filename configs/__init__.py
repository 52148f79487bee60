"""Named training configs (``--config=NAME``): small Python files, one ``get_config()`` each.

``base.py`` holds every field with its meaning; the presets override what differs.
"""

import importlib.util
import json
import os
import re

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))
PRESETS = ("default", "paper", "align_base", "b3_small", "albef_tiny", "mling_tiny")


# Fine-tuning presets (``python -m align_tf.finetune --config=NAME``); the model comes from --init.
FINETUNE_PRESETS = ("finetune_classification", "finetune_vtab", "finetune_lit",
                    "finetune_retrieval", "finetune_retrieval_paper")


def preset_path(name: str, presets=PRESETS) -> str:
    """Path of the config file for a preset name (one of ``presets``) or an existing file path
    (``path:arg`` allowed)."""
    path, _, arg = name.partition(":")
    if os.path.exists(path):
        return name
    if path in presets:
        return os.path.join(CONFIG_DIR, path + ".py") + (f":{arg}" if arg else "")
    raise ValueError(f"Unknown config {name!r}: use a preset {list(presets)}, a path to a .py "
                     "file or a run's config.json.")


def default_model_dir(spec: str) -> str:
    """``align_runs/<name>``: where a run of ``--config=spec`` goes when no ``--model_dir`` is
    given, so that runs of different configs never resume each other's checkpoints. ``name`` is
    the preset's name, a config file's stem, or the directory of a run's config.json (training
    again with a run's config continues that run's name)."""
    path = spec.partition(":")[0]
    if os.path.basename(path) == "config.json":
        path = os.path.dirname(path)
    name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0] or "default"
    return os.path.join("align_runs", name)


def load_config_file(spec: str, presets=PRESETS):
    """The ``ConfigDict`` that ``--config=spec`` names, or ``ValueError`` saying in one line why
    there is none. Nothing here imports TensorFlow, so a bad file is reported at once.

    ``spec``: a preset name (one of ``presets``); a ``.py`` file whose ``get_config()`` returns
    it (``path:arg`` calls ``get_config(arg)``); or a run's ``config.json`` (also a run directory
    holding one), read as ``RunDir.load_config`` reads it (older spellings through
    ``align_tf.migrate.config_json``), to train again with a run's config. Fields that
    ``configs/base.py`` does not have are refused (``unknown_field``).
    """
    path, _, arg = preset_path(spec, presets).partition(":")
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ValueError(f"--config={spec} is a directory without a config.json")
        path = os.path.join(path, "config.json")
    if path.endswith(".json"):
        config = _json_config(path)
    else:
        config = _python_config(path, arg)
    from align_tf.configs import base
    unknown = list(_unknown_fields(config, base.get_config()))
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise ValueError(f"--config={spec}: unknown config field {unknown[0]!r}{more} (every "
                         "field is in configs/base.py)")
    return config


def take_config_arg(argv: list, default: str, presets=PRESETS) -> tuple:
    """``(argv without --config=SPEC / --config SPEC, load_config_file(SPEC or default), SPEC or
    default)``; a command reads its config here, before TensorFlow is imported. ``ValueError``:
    one line."""
    rest, spec = [], default
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            spec = arg[len("--config="):]
        elif arg == "--config" and i + 1 < len(argv):
            spec = argv[i + 1]
        elif not (i and argv[i - 1] == "--config"):
            rest.append(arg)
    try:
        return rest, load_config_file(spec, presets), spec
    except OSError as e:  # unreadable file
        raise ValueError(f"--config={spec}: {e}") from None


def _python_config(path: str, arg: str):
    """``get_config([arg])`` of the Python file ``path``; one-line ``ValueError`` otherwise."""
    import ml_collections
    module_spec = importlib.util.spec_from_file_location("align_tf_config_file", path)
    if module_spec is None:
        raise ValueError(f"--config={path} is not a .py config file or a config.json")
    with open(path, encoding="utf-8", errors="replace") as f:
        if not f.read().strip():
            raise ValueError(f"--config={path} is empty")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ValueError(f"--config={path}: syntax error at line {e.lineno}: {e.msg}") from None
    except Exception as e:  # any failure inside the user's file: one line, not a traceback
        raise ValueError(f"--config={path} fails to load: {type(e).__name__}: {e}") from None
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"--config={path} defines no get_config() (a config file returns its "
                         "ConfigDict from get_config(); a run's config.json works too)")
    try:
        config = module.get_config(arg) if arg else module.get_config()
    except Exception as e:
        raise ValueError(f"--config={path}: get_config() failed: {type(e).__name__}: {e}") \
            from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(f"--config={path}: get_config() returned {type(config).__name__}, "
                         "not an ml_collections.ConfigDict")
    return config


def _json_config(path: str):
    """A run's ``config.json`` as today's config; one-line ``ValueError`` if it is not one."""
    from align_tf import migrate
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not text.strip():
        raise ValueError(f"--config={path} is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--config={path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config={path} holds a JSON {type(data).__name__}, not a config "
                         "object")
    return migrate.config_json(data)


def _unknown_fields(config, known, prefix: str = ""):
    """The dotted names of ``config``'s fields that ``known`` (``base.py``'s config) lacks.
    Free-form parts are not looked into: the entries of ``eval.evaluators`` (named by the user),
    a field whose ``base.py`` value is not a section (``model.text_architecture``: a dict or
    None), and an objective section ``base.py`` lacks (a plug-in's, checked by that objective's
    ``validate``)."""
    for key, value in config.items():
        name = f"{prefix}{key}"
        if key not in known:
            if not (prefix == "objective." and hasattr(value, "keys")):
                yield name
        elif hasattr(value, "keys") and hasattr(known[key], "keys") and name != "eval.evaluators":
            yield from _unknown_fields(value, known[key], name + ".")


def unknown_field(field: str) -> str | None:
    """Why ``--config.{field}=…`` names no field of ``base.py`` (every preset has exactly its
    fields), or None if it does."""
    from align_tf.configs import base
    node = base.get_config()
    for name in field.split("."):
        if not hasattr(node, "keys") or name not in node:
            return f"unknown config field {field!r} (every field is in configs/base.py)"
        node = node[name]
    return None


def comma_list(value, field: str) -> list:
    """A comma list (string or sequence) as a list of unique, stripped names; ``ValueError``
    naming ``field`` if it is empty."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = list(dict.fromkeys(str(n).strip() for n in items if str(n).strip()))
    if not names:
        raise ValueError(f"{field} is empty")
    return names


def evaluators_for(datasets, tasks) -> dict:
    """``eval.evaluators`` entries running every task (evaluator type) of ``tasks`` on every
    dataset (source spec) of ``datasets``, both comma lists, named ``{dataset}_{task}`` with the
    dataset spelt short (``tfds:cifar10`` → ``cifar10``, ``tfrecord:/x/*`` → ``tfrecord``): what
    the evaluate CLI's ``--datasets``/``--tasks`` mean, and a preset's shorthand."""
    from align_tf.data import imagenet_variants  # shorthands: imagenet_variants → its 5 sets
    out = {}
    for spec in imagenet_variants.expand_datasets(comma_list(datasets, "eval.datasets")):
        kind, _, argument = spec.partition(":")
        named = kind in ("tfds", "imagenet") and argument  # entries named by the set
        short = argument.split("/")[0].split(":")[0] if named else kind
        short = re.sub(r"\W", "_", short) or "dataset"
        for task in comma_list(tasks, "eval.tasks"):
            name, n = f"{short}_{task}", 1
            while name in out:
                n += 1
                name = f"{short}_{task}_{n}"
            out[name] = {"type": task, "dataset": spec}
    return out
