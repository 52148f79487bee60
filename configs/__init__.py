"""Named training configs (``--config=NAME``): small Python files, one ``get_config()`` each.

``base.py`` holds every field with its meaning; the presets override what differs.
"""

import os

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
