"""``ImageThroughputMonitor``: images/s (and FLOP/s, MFU) of training, in the loggers."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import ThroughputMonitor


def _images_in(batch: Any) -> int:
    """Images in a batch of pixels (``images``) or of cached latents (``latent_mean``)."""
    return int(batch["images" if "images" in batch else "latent_mean"].shape[0])


class ImageThroughputMonitor(ThroughputMonitor):
    """``ThroughputMonitor`` for ``{"images": (B, C, H, W)}`` batches: images/s, FLOP/s, MFU.

    Args:
        window_size: batches averaged per reading.
        flops_per_image: FLOPs per training image, forward and backward (3.72e11: tutorial UNet).
    """

    def __init__(self, window_size: int = 50, flops_per_image: float | None = None) -> None:
        super().__init__(batch_size_fn=_images_in, window_size=window_size)
        self.flops_per_image = flops_per_image

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Tell Lightning the batch's FLOPs (if known) before it updates the throughput."""
        flops = self.flops_per_image
        pl_module.flops_per_batch = None if flops is None else flops * _images_in(batch)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
