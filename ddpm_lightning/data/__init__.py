"""Datamodules: where images come from and how they reach the model."""

from ddpm_lightning.data.butterflies import ButterfliesDataModule
from ddpm_lightning.data.image_datamodule import ImageDataModule
from ddpm_lightning.data.image_decoding import CorruptImageError
from ddpm_lightning.data.sources import DatasetUnavailableError

__all__ = [
    "ButterfliesDataModule",
    "CorruptImageError",
    "DatasetUnavailableError",
    "ImageDataModule",
]
