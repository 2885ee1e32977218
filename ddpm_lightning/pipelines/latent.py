"""``LatentDiffusionPipeline``: a UNet on an ``AutoencoderKL``'s latents, sampled in diffusers."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from ddpm_lightning.pipelines.labelled import LabelledPipeline
from ddpm_lightning.pipelines.latent_scaling import LatentScaling
from ddpm_lightning.sampling.denoise import to_unit_range

#: Latents per ``vae.decode`` call: decoding is the memory peak at large sizes.
DECODE_BATCH_SIZE = 8


@torch.no_grad()
def decode_latents(
    vae: AutoencoderKL,
    samples: torch.Tensor,
    scaling: LatentScaling | None = None,
    batch_size: int = DECODE_BATCH_SIZE,
) -> torch.Tensor:
    """The UNet's samples as float images in [0, 1]: unscaled once, decoded in float32 batches.

    ``scaling`` defaults to the one in ``vae.config`` (``scaling_factor``, ``shift_factor``,
    ``latents_mean``/``latents_std``), as diffusers' pipelines decode.
    """
    scaling = scaling or LatentScaling.from_config(vae.config)
    dtype = next(vae.parameters()).dtype
    # Outside any autocast: fp16 decoders overflow (diffusers' force_upcast).
    with torch.autocast(samples.device.type, enabled=False):
        latents = scaling.unscale(samples.float()).to(dtype)
        images = [vae.decode(chunk).sample.float() for chunk in latents.split(batch_size)]
    return to_unit_range(torch.cat(images))


class LatentDiffusionPipeline(LabelledPipeline):
    """Samples a UNet trained on ``vae`` latents, then decodes them (DDPM or EDM schedulers).

    Components follow diffusers: ``vae`` (its config holds the latents' scale and shift),
    ``unet`` and ``scheduler``. A class-conditional UNet takes class ids
    (``get_label_ids(names)``) and classifier-free guidance, as ``DiTPipeline`` does.
    """

    def __init__(
        self,
        vae: AutoencoderKL,
        unet: UNet2DModel,
        scheduler: SchedulerMixin,
        id2label: dict | None = None,
    ) -> None:
        super().__init__(unet, scheduler, id2label)
        self.register_modules(vae=vae)

    def _decode(self, samples: torch.Tensor) -> torch.Tensor:
        """``vae.decode`` with the scale and shift of ``vae.config``, in batches."""
        return decode_latents(self.vae, samples)
