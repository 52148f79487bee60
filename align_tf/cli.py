"""What every command line shares: how an entry point runs under absl.

Each command is a module with a ``run()`` that defines its flags and calls ``cli.run(__name__,
main)``. The same ``run()`` serves ``python -m align_tf.X`` and the console script ``align-X``
(``setup.py``), and both print the same ``--help``. (The data commands' one-line-error flag parser
is ``align_tf.data.cli``.)
"""

from __future__ import annotations

import sys

from absl import app, flags


def run(module_name: str, main, **app_run_kwargs) -> None:
    """``absl.app.run(main, **app_run_kwargs)`` as the entry point of module ``module_name``.

    absl's ``--help`` shows the ``__main__`` module's docstring and the flags defined in the file
    named by ``sys.argv[0]``. Under ``python -m`` those are the command's own; under a console
    script they are the generated wrapper's (no docstring, no flags), so the command's docstring
    and flags are lent to the wrapper here.
    """
    if module_name != "__main__":
        main_module = sys.modules["__main__"]
        if not main_module.__doc__:
            main_module.__doc__ = sys.modules[module_name].__doc__
        for flag in flags.FLAGS.flags_by_module_dict().get(module_name, []):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main, **app_run_kwargs)
