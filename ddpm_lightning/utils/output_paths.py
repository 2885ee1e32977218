"""Check an output folder before any work: a file in the way, or a place that takes no writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ddpm_lightning.errors import OutputLocationError


def check_output_folder(folder: str | os.PathLike, option: str) -> Path:
    """Raise :class:`OutputLocationError` unless ``folder`` is, or can become, a writable folder.

    Nothing is left behind: the check creates and removes one empty folder in the nearest
    existing ancestor. ``option`` names the setting to change in the message.
    """
    path = Path(folder).expanduser()
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        what = (
            "is a file" if existing == path else f"cannot be created: {str(existing)!r} is a file"
        )
        raise OutputLocationError(
            f"The output folder {str(path)!r} {what}. Choose a folder for {option}."
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".ddpm-write-check-", dir=existing))
    except OSError as error:
        raise OutputLocationError(
            f"The output folder {str(path)!r} cannot be written ({error.strerror or error} in "
            f"{str(existing)!r}). Choose a folder you can write to for {option}."
        ) from error
    return path
