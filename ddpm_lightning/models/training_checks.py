"""Stop a run whose loss is no longer a number, on every rank at once."""

from __future__ import annotations

from typing import Any

import torch


def check_finite_on_every_rank(loss: torch.Tensor, trainer: Any, batch_idx: int) -> None:
    """Raise ``FloatingPointError`` on every rank if the loss is NaN or inf on any.

    Every rank must stop together, or the others hang in the next all-reduce.
    """
    finite = bool(torch.isfinite(loss))
    if trainer is not None and trainer.world_size > 1:
        finite = not trainer.strategy.reduce_boolean_decision(not finite, all=False)
    if finite:
        return
    value = loss.item() if not torch.isfinite(loss) else "non-finite on another rank"
    step, epoch = (trainer.global_step, trainer.current_epoch) if trainer else (0, 0)
    raise FloatingPointError(
        f"The training loss became {value} at step {step} (epoch {epoch}, batch {batch_idx}); "
        "training stopped. Lower the learning rate, keep gradient clipping on, or train in "
        "bf16-mixed or 32-bit precision."
    )
