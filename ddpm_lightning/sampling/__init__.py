"""Sampling: sampler names, the denoising loop, and the one seeds-to-images path."""

from ddpm_lightning.sampling.denoise import denoise
from ddpm_lightning.sampling.schedulers import (
    SAMPLERS,
    check_sampler_name,
    check_sampler_steps,
    make_sampler,
)
from ddpm_lightning.sampling.sharding import ContiguousShardSampler, shard
from ddpm_lightning.utils.images import to_pil, to_uint8

__all__ = [
    "SAMPLERS",
    "ContiguousShardSampler",
    "check_sampler_name",
    "check_sampler_steps",
    "denoise",
    "make_sampler",
    "shard",
    "to_pil",
    "to_uint8",
]
