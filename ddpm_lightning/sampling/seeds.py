"""What ``trainer.predict`` iterates over: one seed per image to generate."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class ImageSeeds(Dataset):
    """Image ``i`` is generated from seed ``seed + i``.

    Every image has its own seed, so the set of images is the same whatever the number of
    devices or the batch size that ``trainer.predict`` shards them over.
    """

    def __init__(self, num_images: int, seed: int) -> None:
        self.num_images = num_images
        self.seed = seed

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"index": torch.tensor(index), "seed": torch.tensor(self.seed + index)}


def image_seeds(seed: int, num_images: int) -> list[int]:
    """The seeds of images ``0 .. num_images - 1``: image ``i`` always comes from ``seed + i``."""
    return list(range(seed, seed + num_images))
