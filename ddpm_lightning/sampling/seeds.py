"""Which seed generates which image: one rule for every generation path."""

from __future__ import annotations


def image_seeds(seed: int, num_images: int) -> list[int]:
    """The seeds of images ``0 .. num_images - 1``: image ``i`` always comes from ``seed + i``.

    Every image has its own seed, so a set of images is the same whatever the number of
    devices or the batch size it is generated with.
    """
    return list(range(seed, seed + num_images))
