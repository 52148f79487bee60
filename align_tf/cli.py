"""What every command line shares: how an entry point runs under absl.

Each command is a module with a ``run()`` that defines its flags (in ``run()`` or a function it
calls, on absl's global ``FLAGS``) and calls ``cli.run(__name__, main)``. The same ``run()``
serves ``python -m align_tf.X`` and the console script ``align-X`` (``setup.py``), and both print
the same ``--help``. Every command gets, through ``parse``:

* one-line errors, ``align_tf.X: error: ...`` with a non-zero exit, for any flag mistake
  (unknown flag, bad value, stray positional argument, a ``required`` flag left empty) instead of
  absl's usage dump;
* renamed flags (``renamed={"--old": "--new"}``): the old spelling still works, with one
  deprecation line on stderr;
* ``--no-x`` for a boolean ``x`` (argparse's spelling of absl's ``--nox``);
* ``--plugins=MODULE[,MODULE]``: modules imported before the command runs, so that what they
  register (objectives, export signatures) applies;
* a quiet console (``quiet_tensorflow``): TensorFlow's C++ start-up lines (oneDNN, ``cuInit``,
  the absl pre-initialisation banner) silenced at the file-descriptor level, unless
  ``--verbosity``/``-v`` is given.

``parse_args`` parses into a private ``FlagValues`` the same way, for calling a command's ``main``
in-process (tests) with absl's global ``FLAGS`` untouched.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import logging
import os
import sys
from typing import Callable, NoReturn

from absl import app, flags

_program_name: str | None = None  # the running command's name, recorded by ``run``


def run(module_name: str, main, *, required=(), renamed: dict | None = None,
        known_only: bool = False, check: Callable | None = None, **app_run_kwargs) -> None:
    """``absl.app.run(main, **app_run_kwargs)`` as the entry point of module ``module_name``.

    The flags are parsed by ``parse`` (``required``, ``renamed``, ``known_only``, ``check``: see
    there) unless ``app_run_kwargs`` brings its own ``flags_parser``.

    absl's ``--help`` shows the ``__main__`` module's docstring and the flags defined in the file
    named by ``sys.argv[0]``. Under a console script (or a thin ``python -m`` alias of the
    command) those are the wrapper's, so the command's docstring and flags are lent to it here.
    """
    global _program_name
    prog = _program_name = _program(module_name)
    if "plugins" not in flags.FLAGS:
        flags.DEFINE_list("plugins", [], "Python modules to import before the command runs, so "
                          "that what they register (objectives, export signatures) applies, e.g. "
                          "--plugins=my_project.losses,my_project.signatures.")
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS["plugins"])
    main_module = sys.modules["__main__"]
    if module_name != "__main__" and main_module is not sys.modules[module_name]:
        main_module.__doc__ = sys.modules[module_name].__doc__
        for flag in flags.FLAGS.flags_by_module_dict().get(module_name, []):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    quiet_tensorflow(app_run_kwargs.get("argv") or sys.argv)
    import_plugins(prog, app_run_kwargs.get("argv") or sys.argv)
    app_run_kwargs.setdefault("flags_parser", lambda argv: parse(
        prog, argv, flags.FLAGS, required=required, renamed=renamed, known_only=known_only,
        check=check))
    app.run(main, **app_run_kwargs)


# Modules whose import loads TensorFlow's C++ libraries, which print before absl logging is set
# up (so TF_CPP_MIN_LOG_LEVEL does not hide those lines).
_NOISY_IMPORTS = ("tensorflow", "tensorflow_text")
# Python-side INFO lines TensorFlow logs on every checkpoint save.
_NOISY_LOG_LINES = ("Sharding callback duration",)


def quiet_tensorflow(argv: list) -> bool:
    """Unless ``argv`` asks for ``--verbosity``/``-v``: hides TensorFlow's C++ noise. Returns
    whether it did.

    ``TF_CPP_MIN_LOG_LEVEL=3`` hides what the C++ side logs once running (the ``cuInit`` and
    oneDNN ``E0000`` lines; errors reach Python as exceptions anyway); the lines printed while
    its libraries load, before absl logging is initialised, ignore it, so file descriptor 2
    points at /dev/null while ``tensorflow`` (and ``tensorflow_text``) are imported, wherever
    that first happens. TensorFlow's per-save ``Sharding callback duration`` INFO line is
    dropped too. Call before TensorFlow is imported (``run`` does).
    """
    if any(a.split("=")[0] in ("--verbosity", "-v", "--v") for a in argv[1:]):
        return False
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    for name in ("absl", "tensorflow"):  # TensorFlow logs through either
        logging.getLogger(name).addFilter(_quiet_record)
    if not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())
    return True


def _quiet_record(record: logging.LogRecord) -> bool:
    """False for the ``_NOISY_LOG_LINES`` (a ``logging`` filter)."""
    return not any(line in str(record.msg) for line in _NOISY_LOG_LINES)


@contextlib.contextmanager
def stderr_fd_silenced():
    """File descriptor 2 (C++ and Python writes alike) goes to /dev/null inside the block."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds the ``_NOISY_IMPORTS`` as the other finders do, but runs their loading with fd 2 at
    /dev/null (``stderr_fd_silenced``); an import error still propagates, and prints, after."""

    def find_spec(self, name, path=None, target=None):
        if name not in _NOISY_IMPORTS:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    """``loader`` with ``exec_module`` run under ``stderr_fd_silenced``."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader
        with stderr_fd_silenced():
            self.loader.exec_module(module)


def directory_problem(flag: str, path: str | None) -> str | None:
    """Why ``--flag=path`` cannot be a directory this command creates or reads, or None: the path,
    or one of its parents, is a file. Local paths only (``gs://`` ones are left to TensorFlow);
    checked before TensorFlow is imported, so the mistake is one line at once."""
    if not path or "://" in path:
        return None
    head = os.path.abspath(path)
    while not os.path.exists(head) and os.path.dirname(head) != head:
        head = os.path.dirname(head)
    if os.path.exists(head) and not os.path.isdir(head):
        where = "" if head == os.path.abspath(path) else f" ({head} is a file)"
        return f"--{flag}={path} is a file, not a directory{where}"
    return None


_METADATA_HOST = "metadata.google.internal"


def tpu_problem(tpu: str | None) -> str | None:
    """Why ``--tpu=tpu`` cannot work on this machine, or None. A Cloud TPU *name* is looked up
    through the Google Cloud metadata server, which exists only on a Google Cloud VM; off it
    TensorFlow's resolver ends in a long ``URLError`` traceback. ``local`` and
    ``grpc://HOST:PORT`` need no metadata server."""
    if not tpu or tpu == "local" or tpu.startswith("grpc://"):
        return None
    if os.environ.get("GCE_METADATA_HOST") or os.environ.get("GCE_METADATA_IP"):
        return None
    try:
        with open("/sys/class/dmi/id/product_name", encoding="utf-8") as f:
            if "Google" in f.read():
                return None
    except OSError:
        pass  # not Linux, or no DMI in this container: ask the resolver below
    import socket
    try:
        socket.getaddrinfo(_METADATA_HOST, 80)
        return None
    except OSError:
        return (f"--tpu={tpu} names a Cloud TPU, which is found through the Google Cloud "
                f"metadata server ({_METADATA_HOST}), not reachable here: run on a Google Cloud "
                "VM in the TPU's project and zone, use --tpu=local on a TPU VM, or "
                "--tpu=grpc://HOST:8470")


def _program(module_name: str) -> str:
    """The command's name for messages: the module ``python -m`` ran (``align_tf.X``, also for
    a thin alias such as ``align_tf.data.build``), else ``module_name`` (console scripts)."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    if spec and (module_name == "__main__" or spec.name.startswith("align_tf.")):
        return spec.name.removesuffix(".__main__")
    if module_name == "__main__":
        return os.path.basename(sys.argv[0])
    return module_name


def program(default: str) -> str:
    """The running command's name (as ``run`` found it), or ``default`` when no ``run`` is
    active (a command's ``main`` called in-process)."""
    return _program_name or default


def error(prog: str, message) -> NoReturn:
    """Exits with ``{prog}: error: {message}``: one line (newlines folded), no traceback."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    sys.exit(f"{prog}: error: {'; '.join(lines)}")


def parse(prog: str, argv: list, flag_values: flags.FlagValues, *, required=(),
          renamed: dict | None = None, bool_flags=None, known_only: bool = False,
          check: Callable | None = None) -> list:
    """Parses ``argv`` (program name first) into ``flag_values``; returns absl's remainder.

    Args:
      prog: the command's name, for messages.
      argv: the command line, program name first.
      flag_values: where the flags are defined (absl's ``FLAGS`` under ``run``).
      required: flags that must be given a non-empty value.
      renamed: old flag spelling → today's (``{"--input_pattern": "--input"}``); the old one is
        accepted with a deprecation line on stderr.
      bool_flags: the booleans that take ``--no-x``; default: every boolean flag.
      known_only: leave flags not defined in ``flag_values``, and positional arguments, in the
        remainder (e.g. for Beam); otherwise a positional argument is an error.
      check: ``check(remainder)`` after parsing, before ``required``; a ``flags.Error`` it
        raises becomes the one-line error.

    Every mistake exits with ``error``'s one line.
    """
    args = [_respell(prog, arg, flag_values, renamed or {}, bool_flags) for arg in argv[1:]]
    try:
        rest = flag_values(argv[:1] + args, known_only=known_only)
        if check is not None:
            check(rest)
    except flags.Error as e:  # unknown flag, bad value: one line, not absl's usage dump
        error(prog, e)
    if not known_only and len(rest) > 1:
        error(prog, f"unexpected arguments {rest[1:]}")
    for name in required:
        if not flag_values[name].value:
            error(prog, f"--{name} is required")
    return rest


def _respell(prog: str, arg: str, flag_values: flags.FlagValues, renamed: dict,
             bool_flags) -> str:
    """``arg`` in today's spelling: a renamed flag's new name, ``--no-x`` as absl's ``--nox``."""
    name, eq, value = arg.partition("=")
    if name in renamed:
        print(f"{prog}: warning: {name} is deprecated; use {renamed[name]}", file=sys.stderr)
        return renamed[name] + eq + value
    switch = name[5:]
    if name.startswith("--no-") and switch in flag_values and (
            switch in bool_flags if bool_flags is not None else flag_values[switch].boolean):
        return "--no" + arg[5:]
    return arg


def parse_args(prog: str, argv: list | None, define_flags: Callable,
               **parse_kwargs) -> flags.FlagValues:
    """Command-line args (no program name; default ``sys.argv[1:]``) parsed by ``parse`` into a
    private ``FlagValues`` that ``define_flags(flag_values)`` fills (absl's ``FLAGS`` untouched)."""
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    parse(prog, [prog] + list(sys.argv[1:] if argv is None else argv), flag_values,
          **parse_kwargs)
    return flag_values


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
                error(prog, f"--plugins: cannot import {name!r}: {type(e).__name__}: {e}")
    finally:
        sys.path.remove(cwd)
    return names
