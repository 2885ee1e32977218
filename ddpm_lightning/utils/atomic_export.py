"""Write a diffusers pipeline folder so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from diffusers import DiffusionPipeline

from ddpm_lightning.errors import DiskFullError, is_disk_full
from ddpm_lightning.utils.overwrite_guard import refuse_to_overwrite

#: The file whose presence marks a folder as a diffusers pipeline (written last).
PIPELINE_MARKER = "model_index.json"
#: Hidden folders in the target: the new pipeline being written, and the entries it replaces.
STAGING_PREFIX = ".export-staging-"
BACKUP_PREFIX = ".export-previous-"


def is_pipeline_folder(path: str | os.PathLike) -> bool:
    """True if ``path`` holds a diffusers pipeline (a ``model_index.json``)."""
    return (Path(path) / PIPELINE_MARKER).is_file()


def save_pipeline_atomically(
    pipeline: DiffusionPipeline, target: str | os.PathLike, overwrite: bool
) -> Path:
    """Save ``pipeline`` into ``target`` by renames from a staging folder; other files stay.

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
        kept = "The pipeline that was there is unchanged"
        if not is_pipeline_folder(target):
            kept = "Nothing was written there"
        raise DiskFullError(
            errno.ENOSPC,
            f"No space left on device while saving the pipeline to {str(target)!r}. {kept}, and "
            "no partial files were left. Free some space (old epochNNNN.ckpt files in the run's "
            "checkpoints folder can go), then save again; a training run resumes with "
            "--ckpt_path last.",
        ) from error
    return target


def recover_interrupted_export(target: str | os.PathLike) -> None:
    """Undo a killed export: restore entries only its backups hold, delete its hidden folders."""
    target = Path(target)
    if not target.is_dir():
        return
    prefixes = (STAGING_PREFIX, BACKUP_PREFIX)
    leftovers = [path for path in target.iterdir() if path.name.startswith(prefixes)]
    leftovers = [path for path in leftovers if path.is_dir()]
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
        for name in sorted(os.listdir(staging), key=lambda name: name == PIPELINE_MARKER):
            if (target / name).exists():
                os.replace(target / name, backup / name)
            moved.append(name)
            os.replace(staging / name, target / name)
    except OSError:
        if backup is not None:
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
