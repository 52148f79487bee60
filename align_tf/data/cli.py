"""Moved to ``align_tf.cli`` (``parse``, ``parse_args``, ``error``): every command's flag parsing.

Kept only while ``align_tf.data.tfds_captions`` still imports it from here; delete this module
once that command imports ``align_tf.cli`` (or runs through ``cli.run``).
"""

from align_tf.cli import error, parse, parse_args  # noqa: F401
