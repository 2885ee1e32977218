"""What ``trainer.predict`` generates, and how its batches become images on the CPU."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader

from ddpm_lightning.sampling.generation import ImageGenerator
from ddpm_lightning.sampling.seeds import labels_in_proportion
from ddpm_lightning.sampling.settings import SamplingSettings
from ddpm_lightning.sampling.sharding import ContiguousShardSampler
from ddpm_lightning.utils.checks import check_at_least
from ddpm_lightning.utils.images import to_uint8


@dataclass(frozen=True)
class PredictionSettings:
    """What ``trainer.predict`` generates: how many images, and how (the CLI's --predict.*).

    Args:
        num_images: images over all devices; image ``i`` comes from seed ``sampling.seed + i``.
        sampling: sampler, steps, seed, guidance and the per-device batch size.
    """

    num_images: int = 16
    sampling: SamplingSettings = field(default_factory=lambda: SamplingSettings(batch_size=16))

    def __post_init__(self) -> None:
        """Refuse a count of no images."""
        check_at_least("num_images", self.num_images, 1)

    def index_loader(self, world_size: int, rank: int) -> DataLoader:
        """This rank's contiguous block of image indices, in batches."""
        indices = range(self.num_images)
        sampler = ContiguousShardSampler(indices, num_replicas=world_size, rank=rank)
        batch_size = self.sampling.batch_size or self.num_images
        return DataLoader(indices, batch_size=batch_size, sampler=sampler)

    def predict(self, generator: ImageGenerator, indices: torch.Tensor) -> dict[str, Any]:
        """uint8 (B, C, H, W) images on the CPU for ``indices``, and the indices.

        A conditional model spreads the images evenly over its classes (in blocks, by id) and
        adds each image's ``class_names``.
        """
        classes, labels = generator.classes, None
        if classes.conditional:
            every = labels_in_proportion([1] * classes.null_class, self.num_images)
            labels = [every[index] for index in indices.tolist()]
        images = generator((indices + self.sampling.seed).tolist(), class_labels=labels)
        prediction = {"images": to_uint8(images).cpu(), "index": indices.cpu()}
        if labels is not None:
            prediction["class_names"] = [classes.name(label) for label in labels]
        return prediction
