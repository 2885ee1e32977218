"""The real images FID/KID compares against: batches of them and what identifies them."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

#: Real images: uint8 (N, C, H, W), or a dataset of uint8 (C, H, W) images (``PixelDataset``).
RealImages = Tensor | Dataset


def real_image_batches(
    source: RealImages, indices: Iterable[int], batch_size: int
) -> Iterator[Tensor]:
    """Uint8 (B, C, H, W) batches of the real images at ``indices``."""
    indices = list(indices)
    for start in range(0, len(indices), batch_size):
        yield real_batch(source, indices[start : start + batch_size])


def real_batch(source: RealImages, indices: list[int]) -> Tensor:
    """The uint8 (B, C, H, W) real images at ``indices``, from a tensor or a dataset."""
    if isinstance(source, Tensor):
        batch = source[indices]
    else:
        getitems = getattr(source, "__getitems__", None)  # PixelDataset reads a batch at once
        batch = getitems(indices) if getitems is not None else [source[i] for i in indices]
        if isinstance(batch, dict):
            batch = batch["images"]
        if not isinstance(batch, Tensor):
            batch = torch.stack(
                [item["images"] if isinstance(item, dict) else item for item in batch]
            )
    if batch.dtype != torch.uint8 or batch.dim() != 4:
        raise TypeError(
            "Real images for FID must be uint8 (C, H, W) tensors (as ImageDataModule's "
            f"train_dataset yields), got {batch.dtype} batches of shape {tuple(batch.shape)}."
        )
    return batch


def dataset_identity(datamodule: Any = None, dataset_key: str | None = None) -> dict[str, Any]:
    """The dataset part of the cache key: ``dataset_key`` or name and folder, split, cropping."""
    identity: dict[str, Any] = {}
    if dataset_key:
        identity["dataset"] = dataset_key
    elif datamodule is not None:
        identity["dataset"] = getattr(datamodule, "dataset_name", type(datamodule).__qualname__)
        data_dir = getattr(datamodule, "data_dir", None)
        if data_dir:
            identity["data_dir"] = os.path.abspath(data_dir)
    for name in ("split", "image_column", "center_crop"):
        value = getattr(datamodule, name, None)
        if value is not None:
            identity[name] = value
    val_fraction = getattr(datamodule, "val_fraction", 0) or 0
    if val_fraction > 0:  # the training images are what the seeded split leaves
        identity["val_fraction"] = val_fraction
        identity["split_seed"] = getattr(datamodule, "seed", None)
    return identity


def pixels_digest(source: RealImages, num_images: int) -> str:
    """A short hash of the first 64 images: notices a changed dataset behind the same name."""
    batch = real_batch(source, list(range(min(num_images, 64))))
    return hashlib.sha256(batch.contiguous().cpu().numpy().tobytes()).hexdigest()[:16]
