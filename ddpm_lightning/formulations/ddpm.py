"""The tutorial's formulation: DDPM's discrete timesteps, a prediction type, optional min-SNR."""

from __future__ import annotations

import inspect
from typing import Any, Literal, get_args

import torch
from diffusers import DDPMPipeline, DDPMScheduler

from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.formulations.base import Formulation, TrainingExample
from ddpm_lightning.formulations.ddpm_targets import (
    PREDICTION_TYPES,
    PredictionType,
    min_snr_weights,
    training_target,
)
from ddpm_lightning.pipelines import ClassConditionalDDPMPipeline
from ddpm_lightning.sampling.samplers import DDPM_SAMPLERS, SamplerFamily

BetaSchedule = Literal["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"]
VarianceType = Literal[
    "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"
]


def check_choice(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    """Raise a clear error if ``value`` is not one of ``allowed``."""
    if value not in allowed:
        raise InvalidSettingError(f"Unknown {name} {value!r}; choose one of {list(allowed)}.")


class DDPMFormulation(Formulation):
    """DDPM (Ho et al. 2020) as the tutorial trains it, on diffusers' ``DDPMScheduler``.

    Gaussian noise at uniform int64 timesteps, ``add_noise``, and MSE on the prediction type's
    target; with ``min_snr_gamma``, each sample's loss weighted by min(SNR, gamma).

    Args:
        num_train_timesteps: noise levels of the forward process.
        beta_schedule: how the noise variance grows with the timestep.
        beta_start: first beta of the schedule.
        beta_end: last beta of the schedule.
        prediction_type: what the UNet predicts: the noise, the clean sample, or v.
        variance_type: the DDPM sampler's variance.
        clip_sample: clip predicted clean samples to [-1, 1] while sampling.
        scheduler_kwargs: any other ``DDPMScheduler`` argument.
        min_snr_gamma: weight the loss by min(SNR, gamma) (5.0 is usual); None for plain MSE.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_schedule: BetaSchedule = "linear",
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        prediction_type: PredictionType = "epsilon",
        variance_type: VarianceType = "fixed_small",
        clip_sample: bool = True,
        scheduler_kwargs: dict[str, Any] | None = None,
        min_snr_gamma: float | None = None,
    ) -> None:
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        check_choice("beta_schedule", beta_schedule, get_args(BetaSchedule))
        check_choice("variance_type", variance_type, get_args(VarianceType))
        if num_train_timesteps < 1:
            raise InvalidSettingError(
                f"num_train_timesteps must be at least 1, got {num_train_timesteps}."
            )
        if min_snr_gamma is not None and min_snr_gamma <= 0:
            raise InvalidSettingError(f"min_snr_gamma must be above 0, got {min_snr_gamma}.")
        self.min_snr_gamma = min_snr_gamma
        self.scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_schedule=beta_schedule,
            beta_start=beta_start,
            beta_end=beta_end,
            prediction_type=prediction_type,
            variance_type=variance_type,
            clip_sample=clip_sample,
            **(scheduler_kwargs or {}),
        )

    @classmethod
    def from_scheduler(
        cls, scheduler: DDPMScheduler, min_snr_gamma: float | None = None
    ) -> DDPMFormulation:
        """The formulation of a pretrained pipeline's scheduler (every setting it has)."""
        return cls(**cls._arguments(scheduler.config), min_snr_gamma=min_snr_gamma)

    @classmethod
    def _arguments(cls, scheduler_config: Any) -> dict[str, Any]:
        """A scheduler config as this class's arguments: named ones, the rest as kwargs."""
        named = set(inspect.signature(cls.__init__).parameters)
        config = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
        args = {k: v for k, v in config.items() if k in named}
        return {**args, "scheduler_kwargs": {k: v for k, v in config.items() if k not in named}}

    @property
    def prediction_type(self) -> str:
        """``epsilon``, ``sample`` or ``v_prediction``."""
        return self.scheduler.config.prediction_type

    def sample_noise(
        self, clean: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The tutorial's draws: Gaussian noise, then uniform int64 timesteps (in that order)."""
        device = clean.device
        noise = torch.randn(clean.shape, generator=generator, device=device, dtype=clean.dtype)
        num_timesteps, shape = self.scheduler.config.num_train_timesteps, (len(clean),)
        timesteps = torch.randint(0, num_timesteps, shape, generator=generator, device=device)
        return noise, timesteps

    def training_example(
        self, clean: torch.Tensor, noise: torch.Tensor, noise_levels: torch.Tensor
    ) -> TrainingExample:
        """``add_noise`` at the timesteps; the prediction type's target; min-SNR weights."""
        noisy = self.scheduler.add_noise(clean, noise, noise_levels)
        kind = self.prediction_type
        target = training_target(self.scheduler, clean, noise, noise_levels, kind)
        weight = None
        if self.min_snr_gamma is not None:
            weight = min_snr_weights(self.scheduler, noise_levels, self.min_snr_gamma, kind)
        return TrainingExample(noisy, noise_levels, target, weight)

    def sampler_family(self) -> SamplerFamily:
        """DDPM, DDIM, DPM-Solver++ and UniPC on the training noise schedule."""
        steps = self.scheduler.config.num_train_timesteps
        return SamplerFamily(self.scheduler.config, dict(DDPM_SAMPLERS), max_steps=steps)

    def pipeline(self, unet: Any, classes: Any) -> Any:
        """``DDPMPipeline``, or for a conditional model ``ClassConditionalDDPMPipeline``."""
        scheduler = self.export_scheduler()
        if not classes.conditional:
            return DDPMPipeline(unet=unet, scheduler=scheduler)
        return ClassConditionalDDPMPipeline(unet, scheduler, id2label=classes.names_by_id())

    def export_scheduler(self) -> DDPMScheduler:
        """The training schedule as a ``DDPMScheduler`` (swap samplers with ``from_config``)."""
        return DDPMScheduler.from_config(self.scheduler.config)

    def init_args(self) -> dict[str, Any]:
        """Every scheduler setting (named, or in ``scheduler_kwargs``) and ``min_snr_gamma``."""
        return {**self._arguments(self.scheduler.config), "min_snr_gamma": self.min_snr_gamma}
