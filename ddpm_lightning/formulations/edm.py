"""EDM (Karras et al. 2022): preconditioning, log-normal noise levels and EDM's loss weight."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import EDMEulerScheduler

from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.formulations.base import Formulation, TrainingExample
from ddpm_lightning.pipelines import EDMPipeline
from ddpm_lightning.sampling.samplers import EDM_SAMPLERS, SamplerFamily

#: EDM's Heun steps for its CIFAR-10 figures (35 network evaluations).
HEUN_STEPS = 18


class EDMFormulation(Formulation):
    """Trains the UNet as EDM's preconditioned denoiser ``D(x; sigma)``.

    ``D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)`` with ``c_skip = sd^2 / (s^2 + sd^2)``,
    ``c_out = s sd / sqrt(s^2 + sd^2)``, ``c_in = 1 / sqrt(s^2 + sd^2)``, ``c_noise = ln(s) / 4``
    (s: sigma, sd: sigma_data); ``ln(sigma) ~ N(P_mean, P_std^2)`` while training; the loss
    ``lambda(sigma) |D - y|^2`` with ``lambda = (s^2 + sd^2) / (s sd)^2``, which is the UNet's
    own error on the effective target ``(y - c_skip x) / c_out`` times ``lambda c_out^2`` (= 1).
    Sampled by ``edm-heun`` (EDM's Algorithm 1), ``edm-euler`` or ``edm-dpm-solver++``.

    Args:
        sigma_data: the data's standard deviation (0.5 for images in [-1, 1]).
        p_mean: mean of ln(sigma) while training.
        p_std: standard deviation of ln(sigma) while training.
        sigma_min: the smallest sigma sampled.
        sigma_max: the largest sigma sampled (where sampling starts).
        rho: the Karras schedule's exponent.
    """

    def __init__(
        self,
        sigma_data: float = 0.5,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rho: float = 7.0,
    ) -> None:
        for name, value in (("sigma_data", sigma_data), ("p_std", p_std), ("rho", rho)):
            if value <= 0:
                raise InvalidSettingError(f"{name} must be above 0, got {value}.")
        if not 0 < sigma_min < sigma_max:
            raise InvalidSettingError(
                f"Need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}."
            )
        self.sigma_data, self.p_mean, self.p_std = sigma_data, p_mean, p_std
        self.scheduler = EDMEulerScheduler(
            sigma_min=sigma_min, sigma_max=sigma_max, sigma_data=sigma_data, rho=rho
        )

    @classmethod
    def from_scheduler(cls, scheduler: Any) -> EDMFormulation:
        """The formulation of an exported EDM pipeline's scheduler (its sigmas and sigma_data).

        ``p_mean``/``p_std`` (training only) are not saved with a pipeline: the defaults.
        """
        config = scheduler.config
        return cls(config.sigma_data, sigma_min=config.sigma_min, sigma_max=config.sigma_max,
                   rho=config.rho)  # fmt: skip

    def preconditioning(self, sigma: torch.Tensor) -> dict[str, torch.Tensor]:
        """c_skip, c_out, c_in and c_noise at each sigma (the paper's Table 1, EDM column)."""
        sd2, total = self.sigma_data**2, sigma**2 + self.sigma_data**2
        return {
            "c_skip": sd2 / total,
            "c_out": sigma * self.sigma_data / total.sqrt(),
            "c_in": 1 / total.sqrt(),
            "c_noise": sigma.log() / 4,
        }

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2."""
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def sample_noise(
        self, clean: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gaussian noise like ``clean``, then log-normal sigmas (float32), one per sample."""
        device = clean.device
        noise = torch.randn(clean.shape, generator=generator, device=device, dtype=clean.dtype)
        normal = torch.randn(len(clean), generator=generator, device=device)
        return noise, (self.p_mean + self.p_std * normal).exp()

    def training_example(
        self, clean: torch.Tensor, noise: torch.Tensor, noise_levels: torch.Tensor
    ) -> TrainingExample:
        """``c_in (y + sigma n)`` at ``c_noise``, the effective target, ``lambda c_out^2``.

        ``c_noise`` stays a float tensor: the UNet would round a plain number to an integer.
        """
        sigma = noise_levels.float()
        c = {name: value.view(-1, 1, 1, 1) for name, value in self.preconditioning(sigma).items()}
        noisy = clean + sigma.view(-1, 1, 1, 1) * noise
        target = (clean - c["c_skip"] * noisy) / c["c_out"]
        weight = self.loss_weight(sigma) * c["c_out"].flatten() ** 2
        return TrainingExample(c["c_in"] * noisy, c["c_noise"].flatten(), target, weight)

    def sampler_family(self) -> SamplerFamily:
        """EDM's Heun, Euler and DPM-Solver++ on Karras sigmas, with this preconditioning."""
        return SamplerFamily(
            self.scheduler.config, dict(EDM_SAMPLERS), None, "edm-heun", HEUN_STEPS
        )

    def pipeline(self, unet: Any, classes: Any) -> Any:
        """An :class:`~ddpm_lightning.pipelines.EDMPipeline` (class names when conditional)."""
        return EDMPipeline(unet, self.export_scheduler(), classes.names_by_id())

    def export_scheduler(self) -> EDMEulerScheduler:
        """``EDMEulerScheduler`` with the training sigmas and ``sigma_data``."""
        return EDMEulerScheduler.from_config(self.scheduler.config)

    def init_args(self) -> dict[str, Any]:
        """The six settings."""
        config = self.scheduler.config
        return {
            "sigma_data": self.sigma_data,
            "p_mean": self.p_mean,
            "p_std": self.p_std,
            "sigma_min": config.sigma_min,
            "sigma_max": config.sigma_max,
            "rho": config.rho,
        }
