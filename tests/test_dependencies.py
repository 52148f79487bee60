"""Dependency bounds: setup.py bounds every requirement, constraints.txt (what CI ran) lies inside
those bounds, and the installed versions do too, so a fresh machine gets what CI tested."""
import importlib.metadata
import pathlib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _setup_requirements(setup_kwargs):
    """Every requirement setup.py declares (install_requires and all extras), by package name."""
    strings = list(setup_kwargs["install_requires"])
    for extra in setup_kwargs["extras_require"].values():
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


@pytest.fixture(scope="module")
def requirements(setup_kwargs):
    return _setup_requirements(setup_kwargs)


def _has_upper_bound(req):
    return any(s.operator in ("<", "<=", "==", "~=") for s in req.specifier)


def test_every_requirement_has_an_upper_bound(requirements):
    unbounded = [str(r) for reqs in requirements.values() for r in reqs if not _has_upper_bound(r)]
    assert not unbounded, f"requirements without an upper bound: {unbounded}"


def test_constraints_pin_every_requirement_within_its_bounds(requirements):
    pins = _constraints()
    for name, reqs in requirements.items():
        assert name in pins, f"constraints.txt has no pin for {name}"
        for req in reqs:
            assert req.specifier.contains(pins[name], prereleases=True), \
                f"constraints.txt pins {name}=={pins[name]}, outside setup.py's {req}"


def test_installed_versions_lie_within_the_bounds(requirements):
    """Fails when the environment running the tests is not the one the bounds describe."""
    outside = []
    for name, reqs in requirements.items():
        try:
            installed = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            continue  # an extra this environment did not install (e.g. search, edge)
        # "2.13.0+cpu" satisfies "==2.13.0": compare without the local build label.
        public = Version(installed.public)
        outside += [f"{name} {installed} not in {r.specifier}" for r in reqs
                    if not r.specifier.contains(public, prereleases=True)]
    assert not outside, "installed versions outside setup.py's bounds: " + "; ".join(outside)
