"""The docs tell the truth about the repository: every relative link in README.md, docs/*.md and
benchmarks/README.md resolves (the file exists; a ``#anchor`` into a Markdown file names one of
its headings), and every flag that a ``python -m align_tf.X`` or ``align-X`` command shows exists
in that command: absl flags from the command's own ``--helpfull``, ``--config.a.b`` fields from
the config that ``--config`` names (or the command's default), and Beam's pipeline options for the
two Beam commands, which hand the flags they do not define to Beam."""

import functools
import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", "benchmarks/README.md"] + sorted(
    os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
INLINE = re.compile(r"`([^`]+)`")

# The module each console script runs (setup.py entry_points), and the commands' ``python -m``
# aliases; the value is what ``--helpfull`` is asked of.
SCRIPTS = {}
with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as _f:
    for _name, _module in re.findall(r'"(align-[\w-]+)=([\w.]+):run"', _f.read()):
        SCRIPTS[_name] = _module
ALIASES = {"align_tf.data.build": "align_tf.corpus.build", "align_tf.data.vocab": "align_tf.corpus.vocab",
           "align_tf.convert": "align_tf.convert.hf_align", "align_tf.search": "align_tf.search.command",
           "align_tf.serve": "align_tf.serve.command"}
BEAM_COMMANDS = {"align_tf.corpus.build", "align_tf.index"}
# Where --config is a flag, the config used when it is not given.
DEFAULT_CONFIG = {"align_tf.train": "default", "align_tf.finetune": "finetune_classification"}


def _read(doc):
    """``doc``: a path relative to the repository, or an absolute one."""
    with open(os.path.join(REPO, doc), encoding="utf-8") as f:
        return f.read()


def _slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.lru_cache(maxsize=None)
def _anchors(doc):
    prose = FENCE.sub("", _read(doc))
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", prose, re.M)}


def _links(doc):
    """(target, line) of every relative link outside code blocks."""
    prose = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), _read(doc))
    for number, line in enumerate(prose.splitlines(), 1):
        for target in LINK.findall(line):
            if not re.match(r"[a-z]+:", target):
                yield target, number


def _broken_links(doc):
    """``doc:line: target (why)`` for each relative link of ``doc`` that does not resolve."""
    broken = []
    for target, line in _links(doc):
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(REPO, os.path.dirname(doc), path) if path else
                                os.path.join(REPO, doc))
        if not os.path.exists(full):
            broken.append(f"{doc}:{line}: {target} (no such file)")
        elif anchor and full.endswith(".md") and anchor not in _anchors(full):
            broken.append(f"{doc}:{line}: {target} (no such heading)")
    return broken


@pytest.mark.parametrize("doc", DOCS)
def test_every_relative_link_resolves(doc):
    broken = _broken_links(doc)
    assert not broken, "\n".join(broken)


def test_link_check_catches_a_broken_link(tmp_path):
    """The checker itself: a missing file and a missing heading fail; a link into a code block
    is not a link; a heading's anchor drops its punctuation and backticks."""
    (tmp_path / "b.md").write_text("# B\n\n## The `x` flag: (and §8)\n", encoding="utf-8")
    (tmp_path / "a.md").write_text(
        "[ok](b.md#the-x-flag-and-8) [gone](missing.md) [no](b.md#nowhere) [web](https://x.org/y)\n"
        "```\n[code](missing2.md)\n```\n", encoding="utf-8")
    assert _broken_links(str(tmp_path / "a.md")) == [
        f"{tmp_path / 'a.md'}:1: missing.md (no such file)",
        f"{tmp_path / 'a.md'}:1: b.md#nowhere (no such heading)"]


def _commands(doc):
    """(module, argument list, where) for every align_tf command shown in a code block or an
    inline code span."""
    text = _read(doc)
    snippets = [m.group(1) for m in FENCE.finditer(text)]
    snippets += [s.replace("\n", " ") for s in INLINE.findall(FENCE.sub("", text)) if "align" in s]
    for snippet in snippets:
        for line in snippet.replace("\\\n", " ").splitlines():
            try:
                words = shlex.split(line, comments=True)
            except ValueError:  # prose in a code span, e.g. an unbalanced quote
                continue
            for i, word in enumerate(words):
                module = None
                if word == "-m" and i + 1 < len(words) and words[i + 1].startswith("align_tf."):
                    module, args = words[i + 1], words[i + 2:]
                elif word in SCRIPTS:
                    module, args = SCRIPTS[word], words[i + 1:]
                if module:
                    cut = [j for j, a in enumerate(args) if a in ("&&", "||", ";", "|", "&")]
                    yield ALIASES.get(module, module), args[:cut[0]] if cut else args, f"{doc}: {line.strip()}"


@functools.lru_cache(maxsize=None)
def _absl_flags(module):
    """Every flag ``module``'s command defines, read from its ``--helpfull``."""
    code = f"import sys; sys.argv[0] = 'align-docs'; import {module} as m; m.run()"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
    proc = subprocess.run([sys.executable, "-c", code, "--helpfull"], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=120)
    names = set(re.findall(r"^\s+--(?:\[no\])?([\w.-]+):", proc.stdout, re.M))
    names |= {"help", "helpshort"}  # printed as "-?,--[no]help"; absl defines both everywhere
    assert "helpfull" in names, f"{module} --helpfull printed no flags:\n{proc.stderr[-2000:]}"
    return frozenset(names)


@functools.lru_cache(maxsize=None)
def _beam_options():
    from apache_beam.options.pipeline_options import PipelineOptions
    return frozenset(PipelineOptions([]).get_all_options())


@functools.lru_cache(maxsize=None)
def _config(spec):
    sys.path.insert(0, REPO)
    import configs
    presets = configs.PRESETS + configs.FINETUNE_PRESETS
    return configs.load_config_file(spec, presets).to_dict()


def _has_field(config, dotted):
    for key in dotted.split("."):
        if not isinstance(config, dict) or key not in config:
            return False
        config = config[key]
    return True


def _bad_flags(module, args):
    """The flags among ``args`` that ``module``'s command does not have."""
    spec = DEFAULT_CONFIG.get(module)
    for arg in args:
        if arg.startswith("--config="):
            spec = arg.split("=", 1)[1]
    bad = []
    for arg in args:
        name = arg[2:].split("=", 1)[0]
        if not arg.startswith("--") or not name or re.search(r"[A-Z]", name):
            continue  # a value, or a placeholder such as --config.SECTION.FIELD
        if name.startswith("config."):
            if spec is None or "/" in spec or spec.endswith((".py", ".json")):
                ok = spec is not None  # a user's config file: only the flag itself is checked
            else:
                # fine-tuning takes the model section from --init; the base config has every field
                ok = _has_field(_config(spec), name[7:]) or (
                    module == "align_tf.finetune" and _has_field(_config("default"), name[7:]))
        else:
            names = _absl_flags(module)
            bare = name[3:] if name.startswith("no-") else name[2:] if name.startswith("no") else name
            ok = name in names or bare in names or (
                module in BEAM_COMMANDS and name.replace("-", "_") in _beam_options())
        if not ok:
            bad.append(arg)
    return bad


def test_docs_show_commands():
    """The scan finds the commands (a broken regex would make the flag test pass vacuously)."""
    modules = {module for doc in DOCS for module, _, _ in _commands(doc)}
    assert {"align_tf.train", "align_tf.evaluate", "align_tf.finetune", "align_tf.export",
            "align_tf.corpus.build", "align_tf.index"} <= modules


@pytest.mark.parametrize("doc", DOCS)
def test_every_flag_the_docs_show_exists(doc):
    wrong = [f"{where}\n    {module}: {', '.join(bad)}"
             for module, args, where in _commands(doc)
             for bad in [_bad_flags(module, args)] if bad]
    assert not wrong, "flags the command does not have:\n" + "\n".join(wrong)


def test_flag_check_catches_a_wrong_flag():
    """The checker itself: a misspelt flag, a missing config field and a wrong preset's field fail,
    their correct spellings pass."""
    assert _bad_flags("align_tf.train", ["--model_dir=x", "--config.train.steps=3"]) == []
    assert _bad_flags("align_tf.train", ["--modeldir=x"]) == ["--modeldir=x"]
    assert _bad_flags("align_tf.train", ["--config.train.stepz=3"]) == ["--config.train.stepz=3"]
    assert _bad_flags("align_tf.evaluate", ["--no-faiss", "--tasks=knn"]) == []
    assert _bad_flags("align_tf.corpus.build", ["--runner=DataflowRunner", "--runer=x"]) == ["--runer=x"]
