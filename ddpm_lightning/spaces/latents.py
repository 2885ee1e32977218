"""Latent space: the UNet denoises a pretrained autoencoder's scaled latents (Rombach et al.)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL, DiffusionPipeline
from lightning.pytorch import Trainer

from ddpm_lightning.data.latent_cache import LatentEncoding
from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.pipelines.latent import LatentDiffusionPipeline, decode_latents
from ddpm_lightning.pipelines.latent_scaling import LatentScaling, latent_std
from ddpm_lightning.spaces.autoencoder import autoencoder_identity, latent_shape

#: Images per encoder call while filling the latent cache.
ENCODE_BATCH_SIZE = 32


class LatentSpace:
    """Batches to scaled latents, and generated latents back to images, through ``autoencoder``.

    A batch holds either cached latent moments (``latent_mean``/``latent_std``, see
    :mod:`ddpm_lightning.data.latent_cache`) or [-1, 1] ``images`` (streaming, or a data
    module without a cache), encoded here. Either way each step draws a fresh latent
    ``mean + std * noise`` from the caller's generator.

    Args:
        autoencoder: a frozen ``AutoencoderKL`` (the module holds it, so it moves with it).
        channels: image channels.
        image_size: side of the square images.
        scaling: how latents are scaled for the UNet; None: estimated from the cached
            latents in :meth:`prepare` (LDM's ``scale_by_std``).
    """

    def __init__(
        self,
        autoencoder: AutoencoderKL,
        channels: int,
        image_size: int,
        scaling: LatentScaling | None,
    ) -> None:
        self.autoencoder = autoencoder
        self.image_shape = (channels, image_size, image_size)
        #: (c, h, w) of the latents the UNet denoises.
        self.shape = latent_shape(autoencoder, image_size, channels)
        self.scaling = scaling
        self._identity: str | None = None

    @property
    def identity(self) -> str:
        """The autoencoder's digest (weights and architecture), computed once."""
        if self._identity is None:
            self._identity = autoencoder_identity(self.autoencoder)
        return self._identity

    def forget_identity(self) -> None:
        """The weights changed (a checkpoint loaded): compute the digest anew when asked."""
        self._identity = None

    @torch.no_grad()
    def moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's mean and std of [-1, 1] images, in float32 outside any autocast."""
        vae = self.autoencoder
        parameter = next(vae.parameters())
        with torch.autocast(images.device.type, enabled=False):
            pixels = images.to(parameter.device, parameter.dtype)
            distribution = vae.encode(pixels).latent_dist
        return distribution.mean.float(), distribution.std.float()

    def encode(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """A fresh scaled latent per image: ``scale(mean + std * noise)``."""
        if "latent_mean" in batch:
            mean, std = batch["latent_mean"], batch["latent_std"]
        else:
            images = batch["images"]
            if tuple(images.shape[1:]) != self.image_shape:
                raise InvalidSettingError(
                    f"Got a batch of images of shape {tuple(images.shape[1:])}, but the model "
                    f"was built for {self.image_shape}: set the same image_size and channels for "
                    "data and model."
                )
            mean, std = self.moments(images)
        if tuple(mean.shape[1:]) != self.shape:
            raise InvalidSettingError(
                f"The batch's latents have shape {tuple(mean.shape[1:])} but the model's "
                f"autoencoder makes {self.shape}: the data module cached another autoencoder's "
                "latents. Use a new data module for this model."
            )
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return self.require_scaling().scale(mean + std * noise)

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        """Generated latents as float images in [0, 1] (``vae.decode`` in batches)."""
        return decode_latents(self.autoencoder, samples, self.require_scaling())

    def require_scaling(self) -> LatentScaling:
        """The latents' scaling, once known (estimated ones after :meth:`prepare`)."""
        if self.scaling is None:
            raise InvalidSettingError(
                "latent_scaling is 'estimate' but nothing was estimated yet: fit the model first "
                "(the estimate comes from the cached training latents), or set latent_scaling "
                "to 'config' or to explicit values."
            )
        return self.scaling

    def prepare(self, trainer: Trainer, mirrored: bool) -> None:
        """Cache the data module's latents (local rank 0 first, then the others read them).

        Then estimate the scaling from them if asked: the same float64 sums on every rank.
        """
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "cache_latents"):
            cached = False
        else:
            encoding = LatentEncoding(
                self._encode_on(trainer.strategy.root_device),
                self.identity,
                self.shape,
                mirrored,
                ENCODE_BATCH_SIZE,
            )
            if trainer.local_rank == 0:
                cached = datamodule.cache_latents(encoding)
            trainer.strategy.barrier("latent cache")
            if trainer.local_rank != 0:
                cached = datamodule.cache_latents(encoding)
        if self.scaling is None:
            if not cached:
                raise InvalidSettingError(
                    "latent_scaling 'estimate' needs cached latents, and this data has none "
                    "(streaming, or a data module other than ImageDataModule). Set "
                    "latent_scaling to 'config' (the autoencoder's scaling_factor) or to "
                    "explicit values."
                )
            shift = self._config_scaling().shift_factor or 0.0
            std = latent_std(*datamodule.train_latents.moments(), shift=shift)
            self.scaling = self._config_scaling().with_scale_from_std(std)

    def _config_scaling(self) -> LatentScaling:
        return LatentScaling.from_config(self.autoencoder.config)

    def _encode_on(self, device: torch.device) -> Any:
        def encode(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            self.autoencoder.to(device)
            mean, std = self.moments(images.to(device))
            return mean.cpu(), std.cpu()

        return encode

    def pipeline(self, unet: Any, scheduler: Any, id2label: dict | None) -> DiffusionPipeline:
        """A :class:`LatentDiffusionPipeline` whose ``vae`` config holds this scaling."""
        vae = self.autoencoder
        vae.register_to_config(**self.require_scaling().as_dict())
        return LatentDiffusionPipeline(vae, unet, scheduler, id2label)
