"""The one image layer: [0, 1] floats <-> uint8 <-> PIL, grids, and PNG files written atomically."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import make_grid

from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.utils.atomic_files import write_atomically


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] float images to uint8, rounded as ``DDPMPipeline`` rounds them."""
    return (images * 255).round().to(torch.uint8)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(N, C, H, W) images, [0, 1] floats or uint8, to PIL ("L" for one channel, else "RGB")."""
    if images.dtype != torch.uint8:
        images = to_uint8(images)
    return [to_pil_image(image) for image in images.detach().cpu()]


def grid_shape(
    num_images: int, rows: int | None = None, cols: int | None = None
) -> tuple[int, int]:
    """Rows and columns for a grid: square by default (4 x 4 for the tutorial's 16)."""
    if rows and cols:
        if rows * cols < num_images:
            raise InvalidSettingError(f"A {rows}x{cols} grid cannot hold {num_images} images.")
        return rows, cols
    if rows:
        return rows, math.ceil(num_images / rows)
    cols = cols or math.ceil(math.sqrt(num_images))
    return math.ceil(num_images / cols), cols


def image_grid(images: torch.Tensor, cols: int) -> torch.Tensor:
    """(N, C, H, W) images side by side, ``cols`` per row, no padding: one RGB (3, H', W') image."""
    return make_grid(images.cpu(), nrow=cols, padding=0)


def save_png(image: torch.Tensor | Image.Image, path: str | os.PathLike) -> Path:
    """Write one (C, H, W) image (or a PIL image) as a PNG; a crash never leaves half a file."""
    if isinstance(image, torch.Tensor):
        (image,) = to_pil(image.unsqueeze(0))
    return write_atomically(path, lambda file: image.save(file, format="PNG"))


def image_file_name(index: int, class_name: str | None = None) -> str:
    """``00003.png``, or ``00003_<class>.png`` with the class name made safe for file names."""
    suffix = "" if class_name is None else "_" + re.sub(r"[^\w.-]+", "_", str(class_name))
    return f"{index:05d}{suffix}.png"
