"""Sampling: scheduler names and the denoising loop shared by the module and its callbacks."""

from ddpm_lightning.sampling.denoise import denoise, to_pil, to_uint8
from ddpm_lightning.sampling.schedulers import SAMPLERS, check_sampler_name, make_sampler

__all__ = ["SAMPLERS", "check_sampler_name", "denoise", "make_sampler", "to_pil", "to_uint8"]
