"""``ClassConditionalDDPMPipeline``: a class-conditional UNet2DModel with guidance, in diffusers."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import ImagePipelineOutput

from ddpm_lightning.pipelines.labelled import LabelledPipeline


class ClassConditionalDDPMPipeline(LabelledPipeline):
    """``DDPMPipeline`` for a UNet with a class embedding, with classifier-free guidance.

    Follows ``DiTPipeline``: ``class_labels`` (ids), ``guidance_scale``, ``get_label_ids(names)``
    and ``id2label`` saved with the pipeline. The UNet's last class id is the null class. The
    folder's UNet loads in plain diffusers (``UNet2DModel.from_pretrained(folder,
    subfolder="unet")``); this class needs only the sampling loop of ``ddpm_lightning``.
    """

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
        return self._generate(
            len(ids),
            labels,
            guidance_scale,
            generator,
            num_inference_steps,
            output_type,
            return_dict,
        )
