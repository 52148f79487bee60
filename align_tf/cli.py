"""What every command line shares: how an entry point runs under absl.

Each command is a module with a ``run()`` that defines its flags and calls ``cli.run(__name__,
main)``. The same ``run()`` serves ``python -m align_tf.X`` and the console script ``align-X``
(``setup.py``), and both print the same ``--help``. Every command also takes
``--plugins=MODULE[,MODULE]``: modules imported before the command runs, so that what they
register (objectives, export signatures) applies. (The data commands' one-line-error flag parser
is ``align_tf.data.cli``.)
"""

from __future__ import annotations

import importlib
import os
import sys

from absl import app, flags


def run(module_name: str, main, **app_run_kwargs) -> None:
    """``absl.app.run(main, **app_run_kwargs)`` as the entry point of module ``module_name``.

    absl's ``--help`` shows the ``__main__`` module's docstring and the flags defined in the file
    named by ``sys.argv[0]``. Under ``python -m`` those are the command's own; under a console
    script they are the generated wrapper's (no docstring, no flags), so the command's docstring
    and flags are lent to the wrapper here.
    """
    if "plugins" not in flags.FLAGS:
        flags.DEFINE_list("plugins", [], "Python modules to import before the command runs, so "
                          "that what they register (objectives, export signatures) applies, e.g. "
                          "--plugins=my_project.losses,my_project.signatures.")
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS["plugins"])
    if module_name != "__main__":
        main_module = sys.modules["__main__"]
        if not main_module.__doc__:
            main_module.__doc__ = sys.modules[module_name].__doc__
        for flag in flags.FLAGS.flags_by_module_dict().get(module_name, []):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    import_plugins(_program(module_name), app_run_kwargs.get("argv") or sys.argv)
    app.run(main, **app_run_kwargs)


def _program(module_name: str) -> str:
    """The command's name for messages: ``align_tf.X`` under ``python -m`` and console scripts."""
    if module_name == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        return spec.name.removesuffix(".__main__") if spec else os.path.basename(sys.argv[0])
    return module_name


def import_plugins(prog: str, argv: list) -> list:
    """Imports the modules named by ``--plugins`` in ``argv`` (before absl parses it: a plugin
    may define what the flags name); exits with one line if one cannot be imported."""
    names = []
    for i, arg in enumerate(argv):
        if arg.startswith("--plugins="):
            names += arg[len("--plugins="):].split(",")
        elif arg == "--plugins" and i + 1 < len(argv):
            names += argv[i + 1].split(",")
    if not names:
        return names
    cwd = os.getcwd()  # kept: a plugin may change directory
    sys.path.insert(0, cwd)  # as `python -m` would: a module beside the user's files
    try:
        for name in filter(None, (n.strip() for n in names)):
            try:
                importlib.import_module(name)
            except Exception as e:  # any failure inside the user's module: one line
                sys.exit(f"{prog}: error: --plugins: cannot import {name!r}: "
                         f"{type(e).__name__}: {e}")
    finally:
        sys.path.remove(cwd)
    return names
