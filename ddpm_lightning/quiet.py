"""Console lines a user cannot act on, silenced in one place (the command line calls this)."""

from __future__ import annotations

import logging
import warnings

#: Lightning info lines that are advertising or internals, by their start.
NOISE_PREFIXES = (
    "💡 Tip:",
    "Loading `train_dataloader` to estimate number of stepping batches",
    "Trainer already configured with model summary callbacks",  # ours, on purpose
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(NOISE_PREFIXES)


def quiet_known_noise() -> None:
    """Drop Lightning's tips, internal notes and warnings about choices made on purpose."""
    # Lightning's own code calls torch's deprecated LeafSpec check; nothing for users to change.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # The overwrite guard already refuses (or was told to allow) an earlier run's outputs.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # ImageDataModule.val_dataloader's [] is deliberate (no held-out images): Lightning's "make
    # sure this was your intention" would be noise in every run without validation.
    warnings.filterwarnings("ignore", message="Total length of `list` across ranks is zero")
    # A latent model's autoencoder is frozen in eval mode on purpose (the UNet trains).
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _DropNoise) for existing in logger.filters):
            logger.addFilter(_DropNoise())
