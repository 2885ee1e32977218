"""What this package's pipelines share: class names saved with them, and the image output."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from ddpm_lightning.sampling.denoise import denoise, to_unit_range


class LabelledPipeline(DiffusionPipeline):
    """A UNet and a scheduler, with ``id2label`` in ``model_index.json`` (as ``DiTPipeline``).

    Calling it gives ``batch_size`` images of an unconditional UNet, or one per class id of a
    conditional one; :meth:`_generate` runs the one denoising loop (guidance included) and
    returns images as diffusers pipelines do. Subclasses set the default steps and may
    decode the samples (:meth:`_decode`: pixels by default).
    """

    #: ``num_inference_steps`` when the call gives none.
    default_inference_steps = 50

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
        num_inference_steps: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple[Any]:
        """``batch_size`` images, or one per class id of a conditional UNet.

        Args:
            batch_size: images of an unconditional UNet.
            class_labels: class ids, one per image (a conditional UNet).
            guidance_scale: classifier-free guidance above 1 (a conditional UNet).
            generator: makes generation deterministic (one for the batch, or one per image).
            num_inference_steps: sampler steps (None: :attr:`default_inference_steps`).
            output_type: ``pil``, ``np``, ``pt`` (float (N, C, H, W) in [0, 1]) or
                ``latent`` (the UNet's samples, undecoded).
            return_dict: an ``ImagePipelineOutput`` rather than a tuple.
        """
        labels, batch_size, guidance_scale = self._labels(batch_size, class_labels, guidance_scale)
        steps = num_inference_steps or self.default_inference_steps
        return self._generate(
            batch_size, labels, guidance_scale, generator, steps, output_type, return_dict
        )

    def _decode(self, samples: torch.Tensor) -> torch.Tensor:
        """The UNet's samples as float images in [0, 1] (pixels: a rescale)."""
        return to_unit_range(samples)

    def _generate(
        self,
        num_images: int,
        labels: torch.Tensor | None,
        guidance_scale: float,
        generator: Any,
        num_inference_steps: int,
        output_type: str,
        return_dict: bool,
    ) -> ImagePipelineOutput | tuple[Any]:
        samples = denoise(
            self.unet,
            self.scheduler,
            num_images,
            generator,
            num_inference_steps,
            class_labels=labels,
            guidance_scale=guidance_scale,
        )
        images = samples if output_type == "latent" else self._decode(samples)
        return self._output(images, output_type, return_dict)

    def _labels(
        self, batch_size: int, class_labels: list[int] | int | None, guidance_scale: float
    ) -> tuple[torch.Tensor | None, int, float]:
        """The labels tensor, the batch size and the guidance of a call that may give classes.

        A conditional UNet without labels samples the null class, unguided.
        """
        device = self._execution_device
        if class_labels is not None:
            ids = [class_labels] if isinstance(class_labels, int) else list(class_labels)
            return torch.tensor(ids, dtype=torch.int64, device=device), len(ids), guidance_scale
        if self.unet.config.num_class_embeds:
            null = self.unet.config.num_class_embeds - 1
            return torch.full((batch_size,), null, device=device), batch_size, 1.0
        return None, batch_size, guidance_scale

    def _output(
        self, images: torch.Tensor, output_type: str, return_dict: bool
    ) -> ImagePipelineOutput | tuple[Any]:
        """[0, 1] images (or latents) as ``output_type`` asks, in diffusers' output."""
        if output_type not in ("pt", "latent"):
            images = images.cpu().permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                images = self.numpy_to_pil(images)
        return ImagePipelineOutput(images=images) if return_dict else (images,)
