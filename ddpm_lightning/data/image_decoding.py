"""Turn any image file into a fixed-size uint8 array: decoded once, not every epoch."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ddpm_lightning.errors import UsageError

_HIGH_BIT_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class CorruptImageError(UsageError, ValueError):
    """An image file could not be decoded."""


def _to_8_bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit and float images to 8 bits instead of letting PIL clip them to white."""
    if image.mode not in _HIGH_BIT_DEPTH_MODES:
        return image
    pixels = np.asarray(image, dtype=np.float64)
    peak = 65535.0 if pixels.max(initial=0) > 255 else 255.0
    if image.mode == "F" and pixels.max(initial=0) <= 1.0:
        peak = 1.0
    scaled = np.clip(pixels / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL mode (RGBA, palette, 16-bit, grayscale, CMYK) to RGB or L."""
    image = _to_8_bit(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB" if channels == 3 else "L")


def resize(image: Image.Image, image_size: int, center_crop: bool) -> Image.Image:
    """Resize like the tutorial (squash to a square), or resize the short side and crop."""
    if not center_crop:
        return image.resize((image_size, image_size), Image.BILINEAR)
    scale = image_size / min(image.size)
    new_size = tuple(max(image_size, round(side * scale)) for side in image.size)
    image = image.resize(new_size, Image.BILINEAR)
    left, top = ((side - image_size) // 2 for side in new_size)
    return image.crop((left, top, left + image_size, top + image_size))


def open_image(value: Any) -> Image.Image:
    """Open an ``Image(decode=False)`` cell (path and/or bytes), a PIL image, or an array.

    Raises:
        CorruptImageError: naming the file, when it cannot be decoded.
    """
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, np.ndarray):
        return Image.fromarray(value)
    path = value.get("path") if isinstance(value, dict) else None
    data = value.get("bytes") if isinstance(value, dict) else None
    try:
        image = Image.open(io.BytesIO(data)) if data is not None else Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        name = path or "<image bytes in the dataset>"
        raise CorruptImageError(
            f"Could not decode the image file {name!r}: {error}. "
            "Remove or replace the file and run again."
        ) from error
    return image


def make_decoder(
    image_size: int, channels: int, center_crop: bool, label_ids: dict[Any, int] | None = None
) -> Callable[..., dict[str, list]]:
    """A batched ``Dataset.map`` function: image cells in, flat uint8 (C, H, W) ``pixels`` out.

    With ``label_ids`` it takes the label column too and adds ``class_labels`` (the ids).
    """

    def decode_batch(images: list[Any], labels: list[Any] | None = None) -> dict[str, list]:
        pixels = []
        for value in images:
            image = resize(to_mode(open_image(value), channels), image_size, center_crop)
            array = np.asarray(image, dtype=np.uint8).reshape(image_size, image_size, channels)
            pixels.append(np.ascontiguousarray(array.transpose(2, 0, 1)).reshape(-1))
        if label_ids is None:
            return {"pixels": pixels}
        return {"pixels": pixels, "class_labels": [label_ids[label] for label in labels]}

    return decode_batch
