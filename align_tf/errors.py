"""``ConfigError``: a config that cannot run, as one line for the user.

Its own low module, so that what validates a config section (``trainer.validate_config``, an
objective's ``validate``) raises the same class without importing the trainer;
``trainer.ConfigError`` is this class.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config that cannot run; the message is one line meant for the user."""


def check(condition, message: str) -> None:
    """Raises ``ConfigError(message)`` unless ``condition``."""
    if not condition:
        raise ConfigError(message)
