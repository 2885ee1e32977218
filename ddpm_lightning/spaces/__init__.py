"""Spaces the UNet works in: pixels (and, through the same seam, an autoencoder's latents)."""

from ddpm_lightning.spaces.latents import LatentSpace
from ddpm_lightning.spaces.pixels import PixelSpace

__all__ = ["LatentSpace", "PixelSpace"]
