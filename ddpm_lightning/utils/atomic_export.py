"""Write a diffusers pipeline folder so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from diffusers import DiffusionPipeline

#: The file whose presence marks a folder as a diffusers pipeline.
PIPELINE_MARKER = "model_index.json"


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
    fails, the previous pipeline is untouched; if a swap fails, it is put back.

    Raises:
        FileExistsError: ``target`` already holds a pipeline and ``overwrite`` is False.
    """
    target = Path(target)
    if is_pipeline_folder(target) and not overwrite:
        raise FileExistsError(
            f"{str(target)!r} already holds a diffusers pipeline. Choose another folder, or pass "
            "overwrite=True (--overwrite on the command line) to replace it."
        )
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-staging-", dir=target))
    backup = Path(tempfile.mkdtemp(prefix=".export-previous-", dir=target))
    moved: list[str] = []
    try:
        pipeline.save_pretrained(staging)
        names = sorted(os.listdir(staging), key=lambda name: name == PIPELINE_MARKER)
        try:
            for name in names:
                if (target / name).exists():
                    os.replace(target / name, backup / name)
                moved.append(name)
                os.replace(staging / name, target / name)
        except OSError:
            _restore(target, backup, moved)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(backup, ignore_errors=True)
    return target


def _restore(target: Path, backup: Path, moved: list[str]) -> None:
    for name in moved:
        new = target / name
        if new.is_dir():
            shutil.rmtree(new, ignore_errors=True)
        elif new.exists():
            new.unlink()
        if (backup / name).exists():
            os.replace(backup / name, new)
