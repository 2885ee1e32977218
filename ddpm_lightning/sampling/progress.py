"""The sampling progress bar: Lightning's tqdm bar, shown only where Lightning's would be."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

#: Generation shorter than this shows no bar at all.
DELAY_SECONDS = 3.0


@contextlib.contextmanager
def sampling_progress(
    total_steps: int, description: str, trainer: Trainer | None = None
) -> Iterator[Tqdm | None]:
    """A bar over ``total_steps`` denoising steps (steps x batches), or None where silent.

    Silent off global rank zero, unless the Trainer shows Lightning's tqdm bar (this one nests
    under it), off a terminal, and for the first ``DELAY_SECONDS`` (short grids print nothing).
    """
    if trainer is not None and (
        not trainer.is_global_zero or not isinstance(trainer.progress_bar_callback, TQDMProgressBar)
    ):
        yield None
        return
    bar = Tqdm(
        total=total_steps,
        desc=description,
        unit="step",
        # Under a training bar, take the line below it, as Lightning's validation bar does.
        position=1 if trainer is not None else 0,
        leave=False,
        dynamic_ncols=True,
        file=sys.stdout,
        delay=DELAY_SECONDS,
        disable=None,  # tqdm's "only on a terminal"
    )
    try:
        yield bar
    finally:
        bar.close()
