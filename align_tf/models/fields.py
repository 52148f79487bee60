"""Building the architecture dataclasses (``EfficientNetSize``, ``BertSize``) from configs."""

from __future__ import annotations

import dataclasses


def dataclass_from_mapping(cls, fields, what: str):
    """``cls(**fields)`` from a dict or ``ConfigDict``; unknown keys are a clear error."""
    fields = fields.to_dict() if hasattr(fields, "to_dict") else dict(fields)
    unknown = set(fields) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"Unknown {what} architecture fields {sorted(unknown)}")
    return cls(**fields)
