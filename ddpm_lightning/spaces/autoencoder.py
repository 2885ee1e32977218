"""The pretrained ``AutoencoderKL`` of a latent space: loaded, frozen, checked, identified."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from diffusers import AutoencoderKL

from ddpm_lightning.errors import InvalidSettingError, SourceUnavailableError
from ddpm_lightning.utils.checks import check_image_size_multiple


def load_autoencoder(source: str | dict[str, Any], subfolder: str | None = None) -> AutoencoderKL:
    """A frozen ``AutoencoderKL`` in eval mode, from a folder, a Hub id or a config dict.

    A config dict (what a checkpoint stores) builds the network; the checkpoint's state dict
    then fills in its weights, so a checkpoint loads where the source is gone.
    """
    if isinstance(source, dict):
        config = {key: value for key, value in source.items() if not key.startswith("_")}
        try:
            autoencoder = AutoencoderKL(**config)
        except TypeError as error:
            message = f"AutoencoderKL rejected the config {config}: {error}"
            raise InvalidSettingError(message) from error
    else:
        try:
            # low_cpu_mem_usage needs accelerate (not a dependency); off, diffusers stays quiet.
            autoencoder = AutoencoderKL.from_pretrained(
                source, subfolder=subfolder, low_cpu_mem_usage=False
            )
        except (OSError, ValueError) as error:
            where = f"{source!r}" + (f" (subfolder {subfolder!r})" if subfolder else "")
            raise SourceUnavailableError(
                f"Could not load an AutoencoderKL from {where}: {error}\n"
                "autoencoder must be a folder that AutoencoderKL.save_pretrained wrote (with "
                "config.json and the weights) or a Hub id that can be reached, with "
                "autoencoder_subfolder set when the autoencoder is a pipeline's vae/ (for "
                "example stabilityai/stable-diffusion-2-1 with subfolder vae). Offline, download "
                "it once elsewhere and point autoencoder at the folder."
            ) from error
    autoencoder.requires_grad_(False)
    return autoencoder.eval()


def downsampling_factor(autoencoder: AutoencoderKL) -> int:
    """How many pixels one latent spans per side: the encoder halves the size per extra level."""
    return 2 ** (len(autoencoder.config.block_out_channels) - 1)


def latent_shape(
    autoencoder: AutoencoderKL, image_size: int, channels: int
) -> tuple[int, int, int]:
    """(C, h, w) of the latents of ``image_size`` px images, after checking the images fit."""
    config = autoencoder.config
    if channels != config.in_channels:
        raise InvalidSettingError(
            f"The autoencoder takes images with {config.in_channels} channels, but channels is "
            f"{channels}: set channels: {config.in_channels} (data and model) or use an "
            f"autoencoder made for {channels}-channel images."
        )
    factor = downsampling_factor(autoencoder)
    check_image_size_multiple(
        image_size, factor, f"the autoencoder: it shrinks images {factor}x per side"
    )
    size = image_size // factor
    return (config.latent_channels, size, size)


def autoencoder_identity(autoencoder: AutoencoderKL) -> str:
    """A digest of the autoencoder's architecture and weights: which latents a cache holds."""
    digest = hashlib.sha256()
    config = {k: v for k, v in autoencoder.config.items() if not k.startswith("_")}
    for key in ("scaling_factor", "shift_factor", "latents_mean", "latents_std"):
        config.pop(key, None)  # how latents are scaled, not what the encoder computes
    digest.update(repr(sorted(config.items())).encode())
    for name, tensor in autoencoder.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
