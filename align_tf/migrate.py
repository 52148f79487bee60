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


# ------------------------------------------------------------------------- command-line flags


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


# ------------------------------------------------------------------------------- checkpoints
