"""On-device augmentation: seeded horizontal flips, and uint8 pixels scaled to [-1, 1].

It runs on the batch's device after the transfer, so a quarter of the bytes (uint8, not
float32) cross the bus.
"""

from __future__ import annotations

from typing import Any

import torch

from ddpm_lightning.utils.seeding import seeded_generator


def flip_and_scale(batch: dict[str, Any], flips: torch.Generator | None) -> dict[str, Any]:
    """The batch with its uint8 ``images`` flipped and scaled to float32 in [-1, 1].

    Each image is flipped horizontally with probability 1/2, drawn from ``flips`` (None: no
    flips). A batch whose images are not uint8 (already scaled) is returned as it is.
    """
    images = batch["images"]
    if images.dtype != torch.uint8:
        return batch
    if flips is not None:
        flip = torch.rand(images.shape[0], generator=flips) < 0.5
        # Flip the whole batch, then copy the unflipped images back: two kernels, and
        # 3x faster on CPUs than a per-pixel torch.where (see BENCHMARKS.md).
        keep = (~flip).nonzero().squeeze(1).to(images.device)
        images = images.flip(-1).index_copy_(0, keep, images.index_select(0, keep))
    return {**batch, "images": images.float().div_(127.5).sub_(1.0)}


class EpochFlips:
    """The flips' generator, reseeded at each epoch from (seed, epoch, rank).

    Flips are then reproducible, differ between ranks, and a run resumed at an epoch boundary
    flips as the original did.
    """

    def __init__(self) -> None:
        self.generator = torch.Generator()
        self.epoch: int | None = None

    def generator_for(self, seed: int, epoch: int, rank: int) -> torch.Generator:
        """The generator of ``epoch``: a new one at the epoch's first call, then the same."""
        if self.epoch != epoch:
            self.generator = seeded_generator(seed, epoch, rank)
            self.epoch = epoch
        return self.generator
