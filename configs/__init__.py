"""Named training configs (``--config=NAME``): small Python files, one ``get_config()`` each.

``base.py`` holds every field with its meaning; the presets override what differs.
"""

import os
import re

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))
PRESETS = ("default", "paper", "align_base", "b3_small", "albef_tiny")


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
    raise ValueError(f"Unknown config {name!r}: use a preset {list(presets)} or a path to a .py file.")


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
    out = {}
    for spec in comma_list(datasets, "eval.datasets"):
        kind, _, argument = spec.partition(":")
        short = argument.split("/")[0].split(":")[0] if kind == "tfds" and argument else kind
        short = re.sub(r"\W", "_", short) or "dataset"
        for task in comma_list(tasks, "eval.tasks"):
            name, n = f"{short}_{task}", 1
            while name in out:
                n += 1
                name = f"{short}_{task}_{n}"
            out[name] = {"type": task, "dataset": spec}
    return out
