"""DDPM's regression targets per prediction type, and min-SNR loss weights."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from diffusers import DDPMScheduler

from ddpm_lightning.errors import InvalidSettingError

PredictionType = Literal["epsilon", "sample", "v_prediction"]
PREDICTION_TYPES: tuple[str, ...] = get_args(PredictionType)


def training_target(
    scheduler: DDPMScheduler,
    clean: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    prediction_type: str,
) -> torch.Tensor:
    """The regression target for a prediction type: the noise, the clean image, or v."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return clean
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(clean, noise, timesteps)
    raise InvalidSettingError(
        f"Unknown prediction_type {prediction_type!r}; choose one of {list(PREDICTION_TYPES)}."
    )


def min_snr_weights(
    scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: float, prediction_type: str
) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023), one per sample.

    Each type's loss becomes the x0-loss weighted by min(SNR, gamma): easy, low-noise
    timesteps no longer dominate training.
    """
    alphas_cumprod = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = alphas_cumprod / (1 - alphas_cumprod)
    clipped = snr.clamp(max=gamma)
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped
