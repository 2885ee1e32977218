"""Sampling: sampler names, the denoising loop, and the one seeds-to-images path.

Nothing here knows the LightningModule: a generator is built from the network, the sampler
family of the model's formulation, its classes and a :class:`SamplingSettings`.
"""

from ddpm_lightning.sampling.classes import ClassConditioning
from ddpm_lightning.sampling.denoise import denoise, to_unit_range
from ddpm_lightning.sampling.generation import ImageGenerator
from ddpm_lightning.sampling.samplers import (
    DDPM_SAMPLERS,
    SAMPLER_NAMES,
    SamplerFamily,
    check_sampler_name,
)
from ddpm_lightning.sampling.settings import SamplingSettings, parse_sampler_steps
from ddpm_lightning.sampling.sharding import ContiguousShardSampler, shard

__all__ = [
    "DDPM_SAMPLERS",
    "SAMPLER_NAMES",
    "ClassConditioning",
    "ContiguousShardSampler",
    "ImageGenerator",
    "SamplerFamily",
    "SamplingSettings",
    "check_sampler_name",
    "denoise",
    "parse_sampler_steps",
    "shard",
    "to_unit_range",
]
