"""Lightning's checkpoint writer, made atomic: a partial checkpoint never takes the final name."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins import TorchCheckpointIO

from ddpm_lightning.errors import DiskFullError, is_disk_full
from ddpm_lightning.utils.atomic_files import write_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` streaming ``torch.save`` through :func:`write_atomically`.

    Lightning's own writer serializes the whole checkpoint in memory and moves it from the
    system's temporary folder, a copy into the final name when that is another file system.
    Remote paths (``s3://`` and such) are left to it.

    Raises:
        DiskFullError: the disk filled up while writing (the message says what to do).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` atomically (remote paths: as Lightning does)."""
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        try:
            write_atomically(path, lambda file: torch.save(checkpoint, file))
        except Exception as error:
            if is_disk_full(error):
                raise DiskFullError(errno.ENOSPC, _disk_full_message(Path(path))) from error
            raise


def _disk_full_message(path: Path) -> str:
    kept = f"the earlier {path.name} is unchanged" if path.exists() else "no partial file was left"
    return (
        f"No space left on device while saving the checkpoint {str(path)!r}: {kept}. Free some "
        f"space (older epochNNNN.ckpt files in {str(path.parent)!r} can go), then resume with "
        "--ckpt_path last (ckpt_path='last' in Python)."
    )
