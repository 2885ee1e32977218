"""When an every-N-epochs callback is due: on its period and after the last epoch."""

from __future__ import annotations

from lightning.pytorch import Trainer


def is_last_epoch(trainer: Trainer) -> bool:
    """True during the epoch after which fit stops (max_epochs, max_steps or fast_dev_run)."""
    if trainer.fast_dev_run or 0 < (trainer.max_epochs or 0) <= trainer.current_epoch + 1:
        return True
    if (trainer.max_steps or 0) > 0:
        return trainer.global_step >= trainer.max_steps
    return bool(trainer.should_stop)


def is_due(trainer: Trainer, every_n_epochs: int) -> bool:
    """True every ``every_n_epochs`` epochs (counted from 1) and after the last epoch."""
    due = (trainer.current_epoch + 1) % every_n_epochs == 0 or is_last_epoch(trainer)
    return due and not trainer.sanity_checking
