"""Pixel space: the UNet denoises the images themselves, scaled to [-1, 1]."""

from __future__ import annotations

import torch

from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.sampling.denoise import to_unit_range


class PixelSpace:
    """Batches to what the UNet denoises, and generated samples back to images.

    A latent space (an autoencoder's) offers the same two methods: ``encode`` a batch to the
    model's space, ``decode`` samples to float images in [0, 1].

    Args:
        channels: image channels the model was built for.
        image_size: side of the square images the model was built for.
    """

    def __init__(self, channels: int, image_size: int) -> None:
        self.shape = (channels, image_size, image_size)
        #: (C, H, W) of the images: here what the UNet denoises.
        self.image_shape = self.shape

    def encode(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The batch's [-1, 1] images, checked against the model's shape (draws nothing)."""
        images = batch["images"]
        if tuple(images.shape[1:]) != self.shape:
            raise InvalidSettingError(
                f"Got a batch of images of shape {tuple(images.shape[1:])}, but the model was "
                f"built for {self.shape}: set the same image_size and channels for data and model."
            )
        return images

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        """[-1, 1] samples as [0, 1] float images."""
        return to_unit_range(samples)
