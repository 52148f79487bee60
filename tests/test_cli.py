"""Every entry point has a console script (``align-X``) whose ``--help`` is the command's own:
its docstring and its flags (``align_tf.cli.run``), as ``python -m align_tf.X --help`` prints; a
flag mistake is one line, ``align_tf.X: error: ...``, for every command; the shared parser
(``cli.parse``) keeps the old spellings (renamed flags, ``--no-x``)."""

import ast
import pathlib
import shutil
import subprocess
import sys

import pytest
from absl import flags

from align_tf import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Console script → one flag its --help must list (the rest are the command's business).
SCRIPTS = {"align-train": "--model_dir", "align-evaluate": "--savedmodel",
           "align-export": "--output", "align-finetune": "--init", "align-build": "--output_dir",
           "align-vocab": "--output", "align-convert": "--hf_dir",
           "align-index": "--shard_size", "align-search": "--minus",
           "align-serve": "--max_upload_mb"}


# Console script → (a flag mistake, what its one-line error says). The builder leaves flags it does
# not define to Beam, so its mistake is a misspelling of one of its own.
MISTAKES = dict.fromkeys(SCRIPTS, ("--no_such_flag=1", "Unknown command line flag 'no_such_flag'"))
MISTAKES["align-build"] = ("--num_shard=3", "unknown flag --num_shard; did you mean --num_shards?")
MISTAKES["align-index"] = ("--shard_siz=3", "unknown flag --shard_siz; did you mean --shard_size?")


def _targets(setup_kwargs) -> dict:
    """``{script: (module, function)}`` from setup.py's console_scripts."""
    targets = {}
    for line in setup_kwargs["entry_points"]["console_scripts"]:
        script, target = (part.strip() for part in line.split("="))
        module, function = target.split(":")
        targets[script] = (module, function)
    return targets


def _source_path(module: str) -> pathlib.Path:
    """The file of ``module``: ``a/b.py``, or ``a/b/__init__.py`` for a package."""
    path = ROOT / module.replace(".", "/")
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _first_doc_line(module: str) -> str:
    path = _source_path(module)
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))).splitlines()[0]


def test_every_entry_point_has_a_console_script(setup_kwargs):
    targets = _targets(setup_kwargs)
    assert set(targets) == set(SCRIPTS)
    for script, (module, function) in targets.items():
        source = _source_path(module).read_text(encoding="utf-8")
        assert f"\ndef {function}(" in source, f"{script}: {module} has no {function}()"


def test_console_scripts_help_lists_the_commands_docstring_and_flags(setup_kwargs):
    targets = _targets(setup_kwargs)
    missing = [s for s in SCRIPTS if shutil.which(s) is None]
    assert not missing, f"not installed (pip install -e .): {missing}"
    # All at once: each is a separate Python start-up (export imports TensorFlow).
    procs = {s: subprocess.Popen([shutil.which(s), "--help"], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for s in SCRIPTS}
    for script, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode in (0, 1), out  # absl exits 1 after printing --help
        assert _first_doc_line(targets[script][0]) in out, f"{script}: no docstring\n{out}"
        assert f"  {SCRIPTS[script]}:" in out, f"{script}: --help does not list its flags\n{out}"
        assert "  --plugins:" in out, f"{script}: --help does not list --plugins\n{out}"


def test_plugins_are_imported_before_the_command_and_bad_ones_are_one_line(tmp_path, monkeypatch):
    """``--plugins`` imports a user's modules (their registrations apply); the subprocess side is
    ``tests/test_export.py``'s export through ``--plugins=export_toy_plugin``."""
    (tmp_path / "plugin_a.py").write_text("LOADED = True\n")
    (tmp_path / "plugin_b.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.chdir(tmp_path)  # a module beside the user's files, as under `python -m`
    assert cli.import_plugins("align_tf.x", ["prog", "--plugins=plugin_a", "--other=1"]) == \
        ["plugin_a"]
    assert sys.modules["plugin_a"].LOADED
    for argv in (["prog", "--plugins", "plugin_a,no_such_module_xyz"], ["prog", "--plugins=plugin_b"]):
        with pytest.raises(SystemExit) as e:
            cli.import_plugins("align_tf.x", argv)
        message = str(e.value)
        assert message.startswith("align_tf.x: error: --plugins: cannot import") and \
            "\n" not in message, message


def test_console_scripts_flag_mistakes_are_one_line(setup_kwargs):
    """An unknown flag: a non-zero exit and one ``align_tf.X: error:`` line, no traceback."""
    targets = _targets(setup_kwargs)
    procs = {s: subprocess.Popen([shutil.which(s), MISTAKES[s][0]], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for s in SCRIPTS}
    for script, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        last = err.strip().splitlines()[-1]
        assert proc.returncode != 0 and "Traceback" not in err, f"{script}\n{err[-3000:]}"
        assert last.startswith(f"{targets[script][0]}: error: {MISTAKES[script][1]}"), \
            f"{script}\n{err}"


def test_parse_spellings_and_one_line_errors(capsys):
    """``cli.parse`` (what ``cli.run`` parses with): renamed flags with one deprecation line,
    ``--no-x`` switches, required flags, and every mistake as one ``SystemExit`` line."""
    def define(flag_values):
        flags.DEFINE_string("input", None, "", flag_values=flag_values)
        flags.DEFINE_integer("count", 1, "", lower_bound=1, flag_values=flag_values)
        flags.DEFINE_bool("lowercase", True, "", flag_values=flag_values)

    kwargs = dict(required=("input",), renamed={"--input_pattern": "--input"})
    parsed = cli.parse_args("align_tf.x", ["--input_pattern=a", "--no-lowercase", "--count", "3"],
                            define, **kwargs)
    assert (parsed.input, parsed.lowercase, parsed.count) == ("a", False, 3)
    assert capsys.readouterr().err == \
        "align_tf.x: warning: --input_pattern is deprecated; use --input\n"
    for args, message in [([], "--input is required"),
                          (["--input=a", "--count=0"], "flag --count=0: 0 is not"),
                          (["--input=a", "--bogus"], "Unknown command line flag 'bogus'"),
                          (["--input=a", "stray"], "unexpected arguments ['stray']")]:
        with pytest.raises(SystemExit) as e:
            cli.parse_args("align_tf.x", args, define, **kwargs)
        assert str(e.value.code).startswith(f"align_tf.x: error: {message}"), (args, e.value)
        assert "\n" not in str(e.value.code)
