"""Argument checks whose messages name the argument and the allowed range."""

from __future__ import annotations

from ddpm_lightning.errors import InvalidSettingError


def check_at_least(name: str, value: float, minimum: float) -> None:
    """Raise a ValueError unless ``value >= minimum``."""
    if value is None or value < minimum:
        raise InvalidSettingError(f"{name} must be at least {minimum}, got {value}.")


def check_image_size_multiple(image_size: int, factor: int, what: str, advice: str = "") -> None:
    """Raise unless ``image_size`` divides by ``factor``, naming the nearest sizes that do.

    ``what`` says what shrinks the images ``factor`` times per side (the UNet, an autoencoder).
    """
    if image_size % factor:
        lower = max(factor, image_size // factor * factor)
        raise InvalidSettingError(
            f"image_size {image_size} cannot go through {what}, so the size must be a multiple "
            f"of {factor}. Use image_size {lower} or {lower + factor}{advice}."
        )
