"""Sampler names users type, mapped to diffusers schedulers built from the training config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EDMDPMSolverMultistepScheduler,
    EDMEulerScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.sampling.edm_heun import EDMHeunScheduler

#: A sampler: the diffusers scheduler class and the config it adds to the training one.
SamplerSpec = tuple[type[SchedulerMixin], dict[str, Any]]

#: The samplers of models trained on DDPM's discrete timesteps (the one list of their names).
DDPM_SAMPLERS: dict[str, SamplerSpec] = {
    "ddpm": (DDPMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "dpm-solver++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "unipc": (UniPCMultistepScheduler, {}),
}

#: The samplers of EDM models (continuous sigmas, preconditioned network).
EDM_SAMPLERS: dict[str, SamplerSpec] = {
    "edm-euler": (EDMEulerScheduler, {}),
    "edm-heun": (EDMHeunScheduler, {}),
    "edm-dpm-solver++": (EDMDPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
}

#: Every sampler name of every family: what settings accept before the model is known.
SAMPLER_NAMES: list[str] = sorted({**DDPM_SAMPLERS, **EDM_SAMPLERS})

#: Samplers that clip (threshold) their clean-image predictions when the model was trained so.
_THRESHOLDING_SAMPLERS = ("dpm-solver++", "unipc")

#: Training-scheduler settings that say how inference steps are spaced.
_SPACING_KEYS = ("timestep_spacing", "steps_offset")


def check_sampler_name(name: str, known: Mapping[str, Any] | list[str] | None = None) -> str:
    """Return ``name`` if it is a known sampler (of ``known``, else of any family), else raise."""
    names = sorted(known) if known is not None else SAMPLER_NAMES
    if name not in names:
        raise InvalidSettingError(f"Unknown sampler {name!r}; choose one of {names}.")
    return name


@dataclass
class SamplerFamily:
    """The samplers that fit one training formulation, bound to its training scheduler config.

    Args:
        training_config: the training scheduler's config (noise schedule, prediction type).
        samplers: sampler name -> (scheduler class, extra config).
        max_steps: the most inference steps a sampler can take (None: no limit).
        default_sampler: the sampler when none is named.
        default_steps: its steps when none are given.
    """

    training_config: Mapping[str, Any]
    samplers: dict[str, SamplerSpec] = field(default_factory=lambda: dict(DDPM_SAMPLERS))
    max_steps: int | None = None
    default_sampler: str = "ddpm"
    default_steps: int = 1000

    def resolve(self, sampler: str | None, num_inference_steps: int | None) -> tuple[str, int]:
        """The sampler and steps to use: the given ones (checked), else the family's defaults.

        Steps default to the default sampler's only when the sampler is the default too.
        """
        name = self.default_sampler if sampler is None else sampler
        if num_inference_steps is None:
            if name != self.default_sampler:
                raise InvalidSettingError(
                    f"Give num_inference_steps for the sampler {name!r} (20-50 are usual)."
                )
            num_inference_steps = self.default_steps
        self.check(name, num_inference_steps)
        return name, num_inference_steps

    def check(self, name: str, num_inference_steps: int) -> None:
        """Raise if this family has no sampler ``name`` or it cannot take the step count."""
        check_sampler_name(name, self.samplers)
        if self.max_steps is None:
            if num_inference_steps < 1:
                raise InvalidSettingError(
                    f"num_inference_steps must be at least 1, got {num_inference_steps}."
                )
        elif not 1 <= num_inference_steps <= self.max_steps:
            raise InvalidSettingError(
                f"num_inference_steps must be between 1 and the model's {self.max_steps} "
                f"training timesteps, got {num_inference_steps}."
            )

    def make(self, name: str) -> SchedulerMixin:
        """A fresh scheduler of kind ``name`` sharing the training noise schedule.

        Built from the training scheduler's config (betas, timesteps, prediction type), so a
        model trained with v-prediction samples with v-prediction under every sampler.
        """
        scheduler_class, extra = self.samplers[check_sampler_name(name, self.samplers)]
        # Step spacing belongs to the sampler: each uses its own default. Dropping it and
        # diffusers' "_" bookkeeping keys also makes a model in memory and reloaded sample alike.
        config = {
            key: value
            for key, value in dict(self.training_config).items()
            if not key.startswith("_") and (name == "ddpm" or key not in _SPACING_KEYS)
        }
        if name in _THRESHOLDING_SAMPLERS and config.get("clip_sample", False):
            # Clip the solvers' clean-image predictions too (diffusers' advice in pixel space):
            # without it, a model early in training samples saturated noise with them.
            clip = config.get("clip_sample_range", 1.0)
            extra = {**extra, "thresholding": True, "sample_max_value": clip}
        return scheduler_class.from_config(config, **extra)
