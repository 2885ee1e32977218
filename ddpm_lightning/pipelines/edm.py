"""``EDMPipeline``: a UNet2DModel trained with EDM preconditioning, sampled in diffusers."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import ImagePipelineOutput

from ddpm_lightning.pipelines.labelled import LabelledPipeline


class EDMPipeline(LabelledPipeline):
    """Samples an EDM-trained UNet with an EDM scheduler (saved: ``EDMEulerScheduler``).

    The scheduler carries the preconditioning (``sigma_data``) and the sigmas; swap in
    ``EDMDPMSolverMultistepScheduler`` or ``ddpm_lightning.sampling.edm_heun.EDMHeunScheduler``
    with ``from_config(pipeline.scheduler.config)``. A class-conditional UNet takes class ids
    (``get_label_ids(names)``) and classifier-free guidance, as ``DiTPipeline`` does.
    """

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        class_labels: list[int] | int | None = None,
        guidance_scale: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 40,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple[Any]:
        """``batch_size`` images, or one per class id of a conditional UNet.

        Args:
            batch_size: images of an unconditional UNet.
            class_labels: class ids, one per image (a conditional UNet).
            guidance_scale: classifier-free guidance above 1 (a conditional UNet).
            generator: makes generation deterministic (one for the batch, or one per image).
            num_inference_steps: sampler steps.
            output_type: ``pil``, ``np`` or ``pt`` (float (N, C, H, W) in [0, 1]).
            return_dict: an ``ImagePipelineOutput`` rather than a tuple.
        """
        labels, batch_size, guidance_scale = self._labels(batch_size, class_labels, guidance_scale)
        return self._generate(
            batch_size,
            labels,
            guidance_scale,
            generator,
            num_inference_steps,
            output_type,
            return_dict,
        )
