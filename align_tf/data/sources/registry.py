"""The data-source registry: a spelling (``tfrecord:/data/*.tfrecord``) → a ``Source``.

A source registers itself in its own module (as objectives do, ``align_tf.objectives.registry``)::

    @register_source("tfrecord")
    class TFRecordSource(Source):
        takes_argument = True          # spelt tfrecord:GLOB (False: the bare name)
        ...

``get(spec)`` is the one entry point of training (``config.data.name``), evaluation
(``eval.datasets``, ``--dataset``) and fine-tuning (``finetune.dataset``, ``--dataset``).
"""

from __future__ import annotations

from align_tf import migrate, registry

_SOURCES: dict = {}  # name -> class, in registration order


class UnknownSourceError(ValueError):
    """A spelling that names no registered source (one line, naming the choices)."""


def register_source(name: str):
    """Class decorator: registers the class as source ``name`` (sets ``cls.name``).

    A second class under a taken name is a ``ValueError`` (re-registering the same class, e.g. on
    a module reload, replaces it)."""
    def register(cls):
        return registry.add(_SOURCES, "data source", name, cls)
    return register


def names() -> tuple:
    """The registered source names, in registration order."""
    return tuple(_SOURCES)


def registered() -> dict:
    """``{name: class}`` of every registered source (a copy)."""
    return dict(_SOURCES)


def spellings() -> tuple:
    """How each registered source is spelt: ``synthetic``, ``tfrecord:ARG``, …"""
    return tuple(name + (":" + cls.argument_name if cls.takes_argument else "")
                 for name, cls in _SOURCES.items())


def split_spec(spec: str) -> tuple:
    """``(name, argument)`` of ``spec`` as registered, else ``(None, "")``."""
    spec = str(spec).strip()
    if spec in _SOURCES:
        return spec, ""
    prefix, colon, argument = spec.partition(":")
    if colon and prefix in _SOURCES and _SOURCES[prefix].takes_argument:
        return prefix, argument.strip()
    return None, ""


def get(spec: str, field: str = "data source", bare_tfds: bool = True):
    """The ``Source`` that ``spec`` spells. With ``bare_tfds`` (evaluation's old spelling; never
    training's) a bare TFDS name (``cifar10``) is read as ``tfds:cifar10`` with a deprecation
    notice (``migrate.source_spec``).

    Raises:
      UnknownSourceError: one line naming ``field`` and the choices.
    """
    name, argument = split_spec(spec)
    if name is None and bare_tfds:
        new = migrate.source_spec(str(spec).strip(), names())
        if new is not None:
            name, argument = split_spec(new)
            spec = new
    if name is None:
        raise UnknownSourceError(f"unknown {field} {spec!r}; choose from "
                                 f"{', '.join(spellings())}")
    cls = _SOURCES[name]
    if cls.takes_argument and not argument:
        raise UnknownSourceError(f"{field} {spec!r} needs its argument: "
                                 f"{name}:{cls.argument_name}")
    return cls(argument)
