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

import sys


def notice(message: str) -> None:
    """Prints one deprecation line (``align_tf: deprecated: …``) on stderr."""
    print(f"align_tf: deprecated: {message}", file=sys.stderr)


# ------------------------------------------------------------------------------- config fields


# ------------------------------------------------------------------------- command-line flags


# ----------------------------------------------------------------------- data source spellings


# -------------------------------------------------------------------------------- evaluation


# ------------------------------------------------------------------------------- checkpoints
