"""Named training configs (``--config=NAME``): small Python files, one ``get_config()`` each.

``base.py`` holds every field with its meaning; the presets override what differs.
"""

import os

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))
PRESETS = ("default", "paper", "align_base", "b3_small", "albef_tiny")


def preset_path(name: str) -> str:
    """Path of the config file for a preset name or an existing file path (``path:arg`` allowed)."""
    path, _, arg = name.partition(":")
    if os.path.exists(path):
        return name
    if path in PRESETS:
        return os.path.join(CONFIG_DIR, path + ".py") + (f":{arg}" if arg else "")
    raise ValueError(f"Unknown config {name!r}: use a preset {list(PRESETS)} or a path to a .py file.")
