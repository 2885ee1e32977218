"""Which seed generates which image: one rule for every generation path."""

from __future__ import annotations


def image_seeds(seed: int, num_images: int) -> list[int]:
    """Image ``i`` comes from ``seed + i``: the same images on any devices, in any batches."""
    return list(range(seed, seed + num_images))
