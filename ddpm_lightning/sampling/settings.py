"""How to sample: one settings object for grids, FID, predict, ``sample`` and ``evaluate``."""

from __future__ import annotations

from dataclasses import dataclass

from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.sampling.samplers import check_sampler_name
from ddpm_lightning.utils.checks import check_at_least


@dataclass(frozen=True)
class SamplingSettings:
    """Sampler, steps, seed, guidance and batch size: how images are made, never trained.

    Args:
        sampler: for DDPM models ``ddpm`` (the tutorial's), ``ddim``, ``dpm-solver++`` or
            ``unipc``; for EDM models ``edm-heun``, ``edm-euler`` or ``edm-dpm-solver++``. None:
            the model's own default (``ddpm``; ``edm-heun`` for EDM).
        num_inference_steps: sampler steps (None: the default's, the tutorial's 1000 DDPM steps
            or EDM's 18 Heun steps; 20-50 suit the other samplers).
        seed: image ``i`` comes from ``seed + i``, on any devices and in any batches.
        guidance_scale: classifier-free guidance of a class-conditional model (1: none).
        batch_size: images per batch on each device (None: all at once).
    """

    sampler: str | None = None
    num_inference_steps: int | None = None
    seed: int = 0
    guidance_scale: float = 1.0
    batch_size: int | None = None

    def __post_init__(self) -> None:
        """Refuse a typo or an impossible count where the settings are made, before any work."""
        if self.sampler is not None:
            check_sampler_name(self.sampler)
        if self.num_inference_steps is not None:
            check_at_least("num_inference_steps", self.num_inference_steps, 1)
        if self.guidance_scale < 0:
            raise InvalidSettingError(
                f"guidance_scale must be 0 or more, got {self.guidance_scale}."
            )
        if self.batch_size is not None:
            check_at_least("batch_size", self.batch_size, 1)


def parse_sampler_steps(spec: str) -> tuple[str, int]:
    """``"ddim:50"`` -> ``("ddim", 50)``: how commands and benchmarks name a sampler run."""
    name, separator, steps = spec.strip().rpartition(":")
    if not separator or not steps.isdigit():
        raise InvalidSettingError(f"Give samplers as name:steps (e.g. ddim:50), got {spec!r}.")
    return check_sampler_name(name), int(steps)
