"""Refuse to overwrite an earlier run's files unless the user resumes or says so."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Trainer


def refuse_to_overwrite(trainer: Trainer, existing: Path, overwrite_output_dir: bool) -> None:
    """Raise at fit start if ``existing`` is there from an earlier run.

    Resuming (``ckpt_path`` set) continues the earlier run, so its files may be updated.
    """
    if overwrite_output_dir or trainer.ckpt_path is not None or not existing.exists():
        return
    raise FileExistsError(
        f"{str(existing)!r} is from an earlier run and would be overwritten. Resume that run "
        "with ckpt_path='last' (--ckpt_path last), choose a new output_dir, or set "
        "overwrite_output_dir=True to replace it."
    )
