"""Which seed and which class generate which image: one rule for every generation path."""

from __future__ import annotations

from collections.abc import Sequence


def image_seeds(seed: int, num_images: int) -> list[int]:
    """Image ``i`` comes from ``seed + i``: the same images on any devices, in any batches."""
    return list(range(seed, seed + num_images))


def labels_in_proportion(weights: Sequence[float], num_images: int) -> list[int]:
    """``num_images`` class ids in the proportions of ``weights``, class by class in id order.

    Largest remainders round the shares (ties to the lower id); equal weights spread the
    images evenly over the classes (``predict``), a training set's counts give FID its mix.
    """
    total = float(sum(weights))
    shares = [num_images * weight / total for weight in weights]
    counts = [int(share) for share in shares]
    by_remainder = sorted(range(len(shares)), key=lambda c: (counts[c] - shares[c], c))
    for label in by_remainder[: num_images - sum(counts)]:
        counts[label] += 1
    return [label for label, count in enumerate(counts) for _ in range(count)]
