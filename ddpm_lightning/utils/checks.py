"""Argument checks whose messages name the argument and the allowed range."""

from __future__ import annotations

from ddpm_lightning.errors import InvalidSettingError


def check_at_least(name: str, value: float, minimum: float) -> None:
    """Raise a ValueError unless ``value >= minimum``."""
    if value is None or value < minimum:
        raise InvalidSettingError(f"{name} must be at least {minimum}, got {value}.")
