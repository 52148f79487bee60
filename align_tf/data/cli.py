"""What the data command lines (``align_tf.data.build``, ``.vocab``, ``.tfds_captions``) share:
absl flag parsing into a private ``FlagValues`` with one-line errors and the argparse-era
spellings (``--no-x`` switches, renamed flags) still accepted."""

from __future__ import annotations

import sys
from typing import NoReturn

from absl import flags


def error(prog: str, message) -> NoReturn:
    """Exits with ``{prog}: error: {message}``: one line, no traceback."""
    sys.exit(f"{prog}: error: {message}")


def parse(prog: str, argv: list, flag_values: flags.FlagValues, *, required=(), renamed=None,
          bool_flags=(), known_only: bool = False) -> list:
    """Parses ``argv`` (program name first) into ``flag_values``; returns absl's remainder.

    ``renamed`` maps an old flag spelling to today's (a warning line is printed); ``--no-x`` for a
    boolean ``x`` in ``bool_flags`` is absl's ``--nox``; ``required`` flags must be non-empty.
    ``known_only`` leaves flags not defined in ``flag_values`` in the remainder (for Beam).
    """
    renamed = renamed or {}
    args = []
    for arg in argv[1:]:
        name, eq, value = arg.partition("=")
        if name in renamed:
            print(f"{prog}: warning: {name} is deprecated; use {renamed[name]}", file=sys.stderr)
            arg = renamed[name] + eq + value
        elif name.startswith("--no-") and name[5:] in bool_flags:
            arg = "--no" + arg[5:]
        args.append(arg)
    try:
        rest = flag_values(argv[:1] + args, known_only=known_only)
    except flags.Error as e:  # unknown flag, bad value: one line, not absl's usage dump
        error(prog, e)
    if not known_only and len(rest) > 1:
        error(prog, f"unexpected arguments {rest[1:]}")
    for name in required:
        if not flag_values[name].value:
            error(prog, f"--{name} is required")
    return rest


def parse_args(prog: str, argv: list | None, define_flags, **parse_kwargs) -> flags.FlagValues:
    """Command-line args (no program name; default ``sys.argv[1:]``) parsed into a private
    ``FlagValues`` defined by ``define_flags`` (absl's global ``FLAGS`` untouched)."""
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    parse(prog, [prog] + list(sys.argv[1:] if argv is None else argv), flag_values,
          **parse_kwargs)
    return flag_values
