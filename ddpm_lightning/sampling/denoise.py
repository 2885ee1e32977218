"""The reverse-diffusion loop, step for step the one in ``diffusers.DDPMPipeline``."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from diffusers import UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor


@torch.no_grad()
def denoise(
    unet: UNet2DModel,
    scheduler: SchedulerMixin,
    num_images: int,
    generator: torch.Generator | list[torch.Generator],
    num_inference_steps: int,
    on_step: Callable[[], object] | None = None,
    class_labels: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
) -> torch.Tensor:
    """Sample ``num_images`` samples in the UNet's space, shape (N, C, H, W), in its dtype.

    The noise and every scheduler step draw from ``generator`` exactly as ``DDPMPipeline``
    does, so the same seed gives the same images here and in plain diffusers. A list of
    generators gives each image its own stream (images then do not depend on the batch).
    ``on_step`` is called after every step (progress bars).

    A class-conditional UNet takes ``class_labels`` (int64, one per image). With a
    ``guidance_scale`` other than 1, classifier-free guidance: one UNet call on the doubled
    batch (the labels, then the null class, the UNet's last class id) and
    ``uncond + scale * (cond - uncond)``. Whether to guide is the caller's rule
    (:meth:`~ddpm_lightning.sampling.classes.ClassConditioning.conditioning`); this is the
    mechanism. :func:`to_unit_range` turns pixel-space samples into images.
    """
    config = unet.config
    size = config.sample_size
    height, width = (size, size) if isinstance(size, int) else size
    shape = (num_images, config.in_channels, height, width)
    device = next(unet.parameters()).device
    images = randn_tensor(shape, generator=generator, device=device, dtype=unet.dtype)
    scheduler.set_timesteps(num_inference_steps)
    if scheduler.init_noise_sigma != 1:  # EDM samplers start at sigma_max; DDPM's at 1
        images = images * scheduler.init_noise_sigma
    # Not every scheduler takes a generator (UniPC is deterministic); pass it where it does.
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    step_kwargs = {"generator": generator} if takes_generator else {}
    guided = class_labels is not None and guidance_scale != 1.0
    if guided:
        null = torch.full_like(class_labels, config.num_class_embeds - 1)
        class_labels = torch.cat([class_labels, null])
    for timestep in scheduler.timesteps:
        model_input = scheduler.scale_model_input(images, timestep)
        if guided:
            doubled = torch.cat([model_input, model_input])
            cond, uncond = unet(doubled, timestep, class_labels=class_labels).sample.chunk(2)
            model_output = uncond + guidance_scale * (cond - uncond)
        else:
            model_output = unet(model_input, timestep, class_labels=class_labels).sample
        # Under autocast the UNet returns half precision; the update runs in the images' dtype.
        images = scheduler.step(
            model_output.to(images.dtype), timestep, images, **step_kwargs
        ).prev_sample
        if on_step is not None:
            on_step()
    return images


def to_unit_range(samples: torch.Tensor) -> torch.Tensor:
    """Pixel-space samples in [-1, 1] as float32 images in [0, 1], as ``DDPMPipeline`` does."""
    return (samples.float() / 2 + 0.5).clamp(0, 1)
