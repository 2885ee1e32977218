"""Sampler names users type, mapped to diffusers schedulers built from the training config."""

from __future__ import annotations

from typing import Any

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from ddpm_lightning.errors import InvalidSettingError

#: The samplers ``generate`` accepts, with the extra config each needs.
SAMPLERS: dict[str, tuple[type[SchedulerMixin], dict[str, Any]]] = {
    "ddpm": (DDPMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "dpm-solver++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "unipc": (UniPCMultistepScheduler, {}),
}

#: Samplers that clip (threshold) their clean-image predictions when the model was trained so.
_THRESHOLDING_SAMPLERS = ("dpm-solver++", "unipc")

#: Training-scheduler settings that say how inference steps are spaced.
_SPACING_KEYS = ("timestep_spacing", "steps_offset")


def check_sampler_name(name: str) -> str:
    """Return ``name`` if it is a known sampler, else raise a ValueError listing them."""
    if name not in SAMPLERS:
        raise InvalidSettingError(f"Unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}.")
    return name


def check_sampler_steps(num_inference_steps: int, num_train_timesteps: int) -> int:
    """Return the step count if a sampler can take it, else raise a ValueError with the range."""
    if not 1 <= num_inference_steps <= num_train_timesteps:
        raise InvalidSettingError(
            f"num_inference_steps must be between 1 and the model's {num_train_timesteps} "
            f"training timesteps, got {num_inference_steps}."
        )
    return num_inference_steps


def make_sampler(name: str, training_scheduler_config: dict[str, Any]) -> SchedulerMixin:
    """A fresh scheduler of kind ``name`` sharing the training noise schedule.

    Built from the training scheduler's config (betas, timesteps, prediction type), so a
    model trained with v-prediction samples with v-prediction under every sampler.
    """
    scheduler_class, extra = SAMPLERS[check_sampler_name(name)]
    # Step spacing belongs to the sampler: each uses its own default. Dropping it and diffusers'
    # "_" bookkeeping keys also makes a model in memory and reloaded from disk sample alike.
    config = {
        key: value
        for key, value in dict(training_scheduler_config).items()
        if not key.startswith("_") and (name == "ddpm" or key not in _SPACING_KEYS)
    }
    if name in _THRESHOLDING_SAMPLERS and config.get("clip_sample", False):
        # Clip the solvers' clean-image predictions too (diffusers' advice in pixel space):
        # without it, a model early in training samples saturated noise with them.
        clip = config.get("clip_sample_range", 1.0)
        extra = {**extra, "thresholding": True, "sample_max_value": clip}
    return scheduler_class.from_config(config, **extra)
