"""Building the architecture dataclasses (``EfficientNetSize``, ``BertSize``) from configs."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


def dataclass_from_mapping(cls, fields, what: str):
    """``cls(**fields)`` from a dict or ``ConfigDict``; unknown keys are a clear error."""
    fields = fields.to_dict() if hasattr(fields, "to_dict") else dict(fields)
    unknown = set(fields) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"Unknown {what} architecture fields {sorted(unknown)}")
    return cls(**fields)


def named_size(size, sizes: dict, cls, what: str) -> tuple:
    """``(name, cls)`` for a key of ``sizes``, a ``cls`` or a mapping of its fields (name
    ``"custom"`` for the latter two)."""
    if isinstance(size, str):
        if size not in sizes:
            raise ValueError(f"Unknown {what} size {size!r}; choose from {sorted(sizes)}.")
        return size, sizes[size]
    if isinstance(size, cls):
        return "custom", size
    if isinstance(size, Mapping) or hasattr(size, "to_dict"):
        return "custom", cls.from_dict(size)
    raise TypeError(f"Not a{'n' if what[0] in 'AEIOU' else ''} {what} size: {size!r}")
