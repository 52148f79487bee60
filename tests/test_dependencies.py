"""Dependency bounds: setup.py bounds every requirement, constraints.txt (what CI ran) lies inside
those bounds, and the installed versions do too, so a fresh machine gets what CI tested."""
import importlib.metadata
import pathlib
import runpy

import pytest
import setuptools
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _setup_requirements():
    """Every requirement setup.py declares (install_requires and all extras), by package name."""
    captured = {}
    mp = pytest.MonkeyPatch()
    mp.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    mp.chdir(ROOT)  # setup.py reads README.md relative to the working directory
    try:
        runpy.run_path(str(ROOT / "setup.py"))
    finally:
        mp.undo()
    strings = list(captured["install_requires"])
    for extra in captured["extras_require"].values():
        strings += extra
    requirements = {}
    for text in strings:
        req = Requirement(text)
        requirements.setdefault(canonicalize_name(req.name), []).append(req)
    return requirements


def _constraints():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


REQUIREMENTS = _setup_requirements()


def _has_upper_bound(req):
    return any(s.operator in ("<", "<=", "==", "~=") for s in req.specifier)


def test_every_requirement_has_an_upper_bound():
    unbounded = [str(r) for reqs in REQUIREMENTS.values() for r in reqs if not _has_upper_bound(r)]
    assert not unbounded, f"requirements without an upper bound: {unbounded}"


def test_constraints_pin_every_requirement_within_its_bounds():
    pins = _constraints()
    for name, reqs in REQUIREMENTS.items():
        assert name in pins, f"constraints.txt has no pin for {name}"
        for req in reqs:
            assert req.specifier.contains(pins[name], prereleases=True), \
                f"constraints.txt pins {name}=={pins[name]}, outside setup.py's {req}"


def test_installed_versions_lie_within_the_bounds():
    """Fails when the environment running the tests is not the one the bounds describe."""
    outside = []
    for name, reqs in REQUIREMENTS.items():
        try:
            installed = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            continue  # an extra this environment did not install (e.g. search, edge)
        # "2.13.0+cpu" satisfies "==2.13.0": compare without the local build label.
        public = Version(installed.public)
        outside += [f"{name} {installed} not in {r.specifier}" for r in reqs
                    if not r.specifier.contains(public, prereleases=True)]
    assert not outside, "installed versions outside setup.py's bounds: " + "; ".join(outside)
