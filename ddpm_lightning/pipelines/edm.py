"""``EDMPipeline``: a UNet2DModel trained with EDM preconditioning, sampled in diffusers."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from ddpm_lightning.sampling.denoise import denoise, to_unit_range


class EDMPipeline(DiffusionPipeline):
    """Samples an EDM-trained UNet with an EDM scheduler (saved: ``EDMEulerScheduler``).

    The scheduler carries the preconditioning (``sigma_data``) and the sigmas; swap in
    ``EDMDPMSolverMultistepScheduler`` or ``ddpm_lightning.sampling.edm_heun.EDMHeunScheduler``
    with ``from_config(pipeline.scheduler.config)``. A class-conditional UNet takes class ids
    (``get_label_ids(names)``) and classifier-free guidance, as ``DiTPipeline`` does.
    """

    def __init__(
        self,
        unet: UNet2DModel,
        scheduler: SchedulerMixin,
        id2label: dict | None = None,  # dict[int, str]; JSON makes the keys strings
    ) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        id2label = {int(index): str(name) for index, name in (id2label or {}).items()}
        self.register_to_config(id2label=id2label)
        self.labels = {name: index for index, name in sorted(id2label.items())}

    def get_label_ids(self, label: str | list[str]) -> list[int]:
        """Class ids for class names (``id2label``'s values)."""
        names = [label] if isinstance(label, str) else list(label)
        unknown = [name for name in names if name not in self.labels]
        if unknown:
            raise ValueError(f"Unknown class names {unknown}; known: {list(self.labels)}.")
        return [self.labels[name] for name in names]

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
        labels = None
        if class_labels is not None:
            ids = [class_labels] if isinstance(class_labels, int) else list(class_labels)
            labels = torch.tensor(ids, dtype=torch.int64, device=self._execution_device)
            batch_size = len(ids)
        elif self.unet.config.num_class_embeds:  # no labels: the null class, no guidance
            null = self.unet.config.num_class_embeds - 1
            labels = torch.full((batch_size,), null, device=self._execution_device)
            guidance_scale = 1.0
        samples = denoise(
            self.unet,
            self.scheduler,
            batch_size,
            generator,
            num_inference_steps,
            class_labels=labels,
            guidance_scale=guidance_scale,
        )
        images = to_unit_range(samples)
        if output_type != "pt":
            images = images.cpu().permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                images = self.numpy_to_pil(images)
        return ImagePipelineOutput(images=images) if return_dict else (images,)
