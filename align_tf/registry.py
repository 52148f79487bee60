"""What every registry (objectives, data sources, evaluators) does on registration, at the bottom
of the import graph so that any stage may use it."""

from __future__ import annotations


def add(table: dict, kind: str, name: str, cls, attribute: str = "name"):
    """Puts ``cls`` in ``table`` under ``name`` and sets ``cls.<attribute> = name``; returns it.

    A second class under a taken name is a ``ValueError`` naming the first (re-registering the
    same class, e.g. on a module reload, replaces it)."""
    old = table.get(name)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__,
                                                                    cls.__qualname__):
        raise ValueError(f"{kind} {name!r} is already registered by "
                         f"{old.__module__}.{old.__qualname__}")
    setattr(cls, attribute, name)
    table[name] = cls
    return cls
