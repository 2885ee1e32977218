"""A latent ``DDPMModule``'s settings: the scaling, the UNet's fit, self-contained checkpoints."""

from __future__ import annotations

from typing import Any

from diffusers import UNet2DModel

from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.pipelines.latent_scaling import LatentScaling
from ddpm_lightning.spaces import LatentSpace

SCALING_CHOICES = ("config", "estimate")


def resolve_latent_scaling(setting: str | dict[str, Any], config: Any) -> LatentScaling | None:
    """``latent_scaling`` as values: the autoencoder config's, given ones, or None (estimate)."""
    if isinstance(setting, dict):
        unknown = set(setting) - {"scaling_factor", "shift_factor", "latents_mean", "latents_std"}
        if unknown or "scaling_factor" not in setting:
            raise InvalidSettingError(
                f"latent_scaling as values needs scaling_factor (and optionally shift_factor, "
                f"latents_mean, latents_std); got {sorted(setting)}."
            )
        return LatentScaling.from_config(setting)
    if setting not in SCALING_CHOICES:
        raise InvalidSettingError(
            f"latent_scaling must be one of {SCALING_CHOICES} or a dict of values, got {setting!r}."
        )
    return LatentScaling.from_config(config) if setting == "config" else None


def check_unet_takes(unet: UNet2DModel, shape: tuple[int, int, int], autoencoder: Any) -> None:
    """Raise if the UNet's channels or size are not the space's (a pretrained or set UNet)."""
    config = unet.config
    size = config.sample_size
    size = size if isinstance(size, int) else tuple(size)
    channels, height, _ = shape
    if (config.in_channels, config.out_channels, size) == (channels, channels, height):
        return
    what = "the autoencoder's latents" if autoencoder is not None else "the images"
    raise InvalidSettingError(
        f"The UNet takes {config.in_channels} channels at {size} px and returns "
        f"{config.out_channels} channels, but {what} have {channels} channels at {height} px. "
        "Leave in_channels, out_channels and sample_size out of unet_kwargs (they follow the "
        "data, or the autoencoder's latent shape), or start from a UNet trained on this space."
    )


def make_latents_self_contained(checkpoint: dict[str, Any], space: LatentSpace) -> None:
    """Store the autoencoder's config (its weights are in the state dict), scaling and digest.

    So a latent checkpoint loads where the autoencoder's folder or Hub id cannot be reached,
    and a resume with another autoencoder is refused (:mod:`.checkpoint_fit`).
    """
    hyper_parameters = checkpoint.get("hyper_parameters")
    if hyper_parameters is not None:
        source = hyper_parameters.get("autoencoder")
        if not isinstance(source, dict):
            checkpoint["autoencoder_from"] = source
        config = {k: v for k, v in space.autoencoder.config.items() if not k.startswith("_")}
        hyper_parameters["autoencoder"] = config
        hyper_parameters["autoencoder_subfolder"] = None
        hyper_parameters["latent_scaling"] = space.require_scaling().as_dict()
    checkpoint["autoencoder_identity"] = space.identity
