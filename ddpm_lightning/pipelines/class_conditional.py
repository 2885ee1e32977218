"""``ClassConditionalDDPMPipeline``: a class-conditional UNet2DModel with guidance, in diffusers."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from ddpm_lightning.sampling.denoise import denoise, to_unit_range


class ClassConditionalDDPMPipeline(DiffusionPipeline):
    """``DDPMPipeline`` for a UNet with a class embedding, with classifier-free guidance.

    Follows ``DiTPipeline``: ``class_labels`` (ids), ``guidance_scale``, ``get_label_ids(names)``
    and ``id2label`` saved with the pipeline. The UNet's last class id is the null class. The
    folder's UNet loads in plain diffusers (``UNet2DModel.from_pretrained(folder,
    subfolder="unet")``); this class needs only the sampling loop of ``ddpm_lightning``.
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
        class_labels: list[int] | int,
        guidance_scale: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 1000,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple[Any]:
        """One image per class id; guidance (one UNet call on a doubled batch) above 1.

        Args:
            class_labels: class ids, one per image (see :meth:`get_label_ids`).
            guidance_scale: 1 samples the classes as trained; more follows them more closely.
            generator: makes generation deterministic (one for the batch, or one per image).
            num_inference_steps: denoising steps.
            output_type: ``pil``, ``np`` or ``pt`` (float (N, C, H, W) in [0, 1]).
            return_dict: an ``ImagePipelineOutput`` rather than a tuple.
        """
        ids = [class_labels] if isinstance(class_labels, int) else list(class_labels)
        labels = torch.tensor(ids, dtype=torch.int64, device=self._execution_device)
        samples = denoise(
            self.unet,
            self.scheduler,
            len(ids),
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
