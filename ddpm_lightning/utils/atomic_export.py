"""Write a diffusers pipeline folder so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from diffusers import DiffusionPipeline

from ddpm_lightning.errors import UsageError
from ddpm_lightning.utils.overwrite_guard import refuse_to_overwrite

#: The file whose presence marks a folder as a diffusers pipeline.
PIPELINE_MARKER = "model_index.json"
#: Hidden folders inside the target: the new pipeline while it is written, and the entries it
#: replaces while they are swapped.
STAGING_PREFIX = ".export-staging-"
BACKUP_PREFIX = ".export-previous-"

_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXTS = tuple(os.strerror(number) for number in _DISK_FULL_ERRNOS)


class DiskFullError(UsageError, OSError):
    """The device (or the user's quota) was full while an output was written.

    Raised from the low-level error (an ``OSError``, or a library's own error wrapping one) as
    ``DiskFullError(errno.ENOSPC, message)``, the message saying what was kept and what to do.
    """

    def __str__(self) -> str:
        return str(self.strerror)


def is_disk_full(error: BaseException | None) -> bool:
    """True if ``error``, or an error it came from, says that the disk or quota is full.

    Libraries wrap the ``OSError``: ``torch.save`` raises a ``RuntimeError`` while handling it,
    safetensors raises its own error with "No space left on device (os error 28)" in the text.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
            return True
        if any(text in str(error) for text in _DISK_FULL_TEXTS):
            return True
        error = error.__cause__ or error.__context__
    return False


def is_pipeline_folder(path: str | os.PathLike) -> bool:
    """True if ``path`` holds a diffusers pipeline (a ``model_index.json``)."""
    return (Path(path) / PIPELINE_MARKER).is_file()


def save_pipeline_atomically(
    pipeline: DiffusionPipeline, target: str | os.PathLike, overwrite: bool
) -> Path:
    """Save ``pipeline`` into ``target``, replacing an earlier pipeline only by a complete one.

    The pipeline is first written to a hidden staging folder inside ``target`` (same file
    system, so the final moves are renames). Only when that save has finished are the old
    entries (``unet/``, ``scheduler/``, ``model_index.json``) swapped for the new ones, the
    marker file last; other files in ``target`` (samples, logs) are left alone. If the save
    fails, the previous pipeline is untouched; if a swap fails, it is put back. What an earlier
    export killed midway left behind is recovered first (see :func:`recover_interrupted_export`).

    Raises:
        OutputExistsError: ``target`` already holds a pipeline and ``overwrite`` is False.
        DiskFullError: the disk filled up; the previous pipeline is intact and nothing is left.
    """
    target = Path(target)
    recover_interrupted_export(target)
    advice = "Choose another folder, or replace it: overwrite=True (--overwrite true)."
    refuse_to_overwrite([target / PIPELINE_MARKER], overwrite, advice)
    try:
        _swap_in(pipeline, target)
    except Exception as error:
        if not is_disk_full(error):
            raise
        kept = (
            "The pipeline that was there is unchanged"
            if is_pipeline_folder(target)
            else "Nothing was written there"
        )
        raise DiskFullError(
            errno.ENOSPC,
            f"No space left on device while saving the pipeline to {str(target)!r}. {kept}, and "
            "no partial files were left. Free some space (old epochNNNN.ckpt files in the run's "
            "checkpoints folder can go), then save again; a training run resumes with "
            "--ckpt_path last.",
        ) from error
    return target


def recover_interrupted_export(target: str | os.PathLike) -> None:
    """Clean up after an export into ``target`` that was killed midway (kill -9, power loss).

    Its staging folder (a partial or complete new pipeline) is deleted. Its backup folder holds
    the entries it had moved aside: one killed between the two renames of an entry is only
    there, so an entry missing from ``target`` is moved back (from the newest backup when
    several are left) before the backup is deleted. Exports into one folder are assumed to run
    one at a time (a Trainer exports from global rank zero only).
    """
    target = Path(target)
    if not target.is_dir():
        return
    leftovers = [
        path
        for path in target.iterdir()
        if path.name.startswith((STAGING_PREFIX, BACKUP_PREFIX)) and path.is_dir()
    ]
    backups = [path for path in leftovers if path.name.startswith(BACKUP_PREFIX)]
    for backup in sorted(backups, key=lambda path: path.stat().st_mtime, reverse=True):
        for entry in backup.iterdir():
            if not os.path.lexists(target / entry.name):
                os.replace(entry, target / entry.name)
    for leftover in leftovers:
        shutil.rmtree(leftover, ignore_errors=True)


def _swap_in(pipeline: DiffusionPipeline, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=target))
    backup: Path | None = None
    moved: list[str] = []
    try:
        pipeline.save_pretrained(staging)
        backup = Path(tempfile.mkdtemp(prefix=BACKUP_PREFIX, dir=target))
        names = sorted(os.listdir(staging), key=lambda name: name == PIPELINE_MARKER)
        try:
            for name in names:
                if (target / name).exists():
                    os.replace(target / name, backup / name)
                moved.append(name)
                os.replace(staging / name, target / name)
        except OSError:
            _restore(target, staging, backup, moved)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)


def _restore(target: Path, staging: Path, backup: Path, moved: list[str]) -> None:
    # Renames only, so that a kill at any point leaves each entry whole in target or backup.
    for name in moved:
        if os.path.lexists(target / name):
            os.replace(target / name, staging / f".replaced-{name}")
        if os.path.lexists(backup / name):
            os.replace(backup / name, target / name)
