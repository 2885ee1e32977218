"""On-device augmentation: seeded horizontal flips, and uint8 pixels scaled to [-1, 1].

It runs on the batch's device after the transfer, so a quarter of the bytes (uint8, not
float32) cross the bus.
"""

from __future__ import annotations

from typing import Any

import torch

from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.utils.seeding import seeded_generator


def flip_and_scale(batch: dict[str, Any], flips: torch.Generator | None) -> dict[str, Any]:
    """The batch with its uint8 ``images`` flipped and scaled to float32 in [-1, 1].

    Each image is flipped horizontally with probability 1/2, drawn from ``flips`` (None: no
    flips). A batch whose images are not uint8 (already scaled) is returned as it is.
    """
    if "latent_mean" in batch:
        return choose_views(batch, flips)
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


def choose_views(batch: dict[str, Any], flips: torch.Generator | None) -> dict[str, Any]:
    """Cached latents: per image its own moments, or its mirror image's when it flips.

    Flips are drawn as :func:`flip_and_scale` draws them for images
    (:mod:`~ddpm_lightning.data.latent_cache` holds both views). ``latent_mean`` and
    ``latent_std`` (B, V, c, h, w) become (B, c, h, w).
    """
    mean, std = batch["latent_mean"], batch["latent_std"]
    if mean.dim() == 4:  # chosen already
        return batch
    size = mean.shape[0]
    flip = torch.zeros(size, dtype=torch.bool)
    if flips is not None:
        flip = torch.rand(size, generator=flips) < 0.5
        if mean.shape[1] < 2:
            raise InvalidSettingError(
                "random_flip is on but the cached latents hold no mirrored images: flipped "
                "latents are not the latents of flipped images. Set random_flip: false, or "
                "encode the cache with random flips on."
            )
    view = flip.long().to(mean.device)
    rows = torch.arange(size, device=mean.device)
    return {**batch, "latent_mean": mean[rows, view], "latent_std": std[rows, view]}


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
