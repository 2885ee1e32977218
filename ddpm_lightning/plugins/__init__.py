"""Trainer plugins: how checkpoints reach the disk."""

from ddpm_lightning.plugins.atomic_checkpoint_io import (
    AtomicCheckpointIO,
    remove_checkpoint_temporaries,
)

__all__ = ["AtomicCheckpointIO", "remove_checkpoint_temporaries"]
