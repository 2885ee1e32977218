"""``AtomicCheckpointIO``: a Trainer plugin whose checkpoint writes never leave half a file."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins import TorchCheckpointIO

from ddpm_lightning.errors import DiskFullError, is_disk_full
from ddpm_lightning.utils.atomic_files import write_atomically

#: The temporary files of ``write_atomically`` for a checkpoint: ``.last.ckpt.k3j9_x2a.tmp``.
_CHECKPOINT_TEMPORARY = re.compile(r"^\..+\.ckpt\.[^.]+\.tmp$")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` streaming ``torch.save`` through :func:`write_atomically`."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        """Write ``checkpoint`` atomically (remote paths: as Lightning); DiskFullError if full."""
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        try:
            write_atomically(path, lambda file: torch.save(checkpoint, file))
        except Exception as error:
            if not is_disk_full(error):
                raise
            path = Path(path)
            kept = "no partial file was left"
            if path.exists():
                kept = f"the earlier {path.name} is unchanged"
            raise DiskFullError(
                errno.ENOSPC,
                f"No space left on device while saving the checkpoint {str(path)!r}: {kept}. Free "
                f"some space (older epochNNNN.ckpt files in {str(path.parent)!r} can go), then "
                "resume with --ckpt_path last (ckpt_path='last' in Python).",
            ) from error


def remove_checkpoint_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete what checkpoint writes killed midway left (one writer per folder: rank zero)."""
    stale = [path for path in Path(folder).glob("*.tmp") if _CHECKPOINT_TEMPORARY.match(path.name)]
    stale = [path for path in stale if path.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
