"""The one check that keeps a run from silently replacing what an earlier run wrote."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ddpm_lightning.errors import OutputExistsError

#: How to go on when fit finds an earlier run's outputs.
RUN_ADVICE = (
    "Resume that run (--ckpt_path last; ckpt_path='last' in Python), choose another output "
    "folder (--output.output_dir), or replace it (--output.overwrite_output_dir true; "
    "overwrite_output_dir=True)."
)


def refuse_to_overwrite(paths: Iterable[str | os.PathLike], overwrite: bool, advice: str) -> None:
    """Before any work, raise ``OutputExistsError`` naming the first of ``paths`` that exists."""
    existing = [Path(path) for path in paths if Path(path).exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputExistsError(
            f"{str(existing[0])!r}{more} already exists, from an earlier run, and would be "
            f"overwritten. {advice}"
        )
