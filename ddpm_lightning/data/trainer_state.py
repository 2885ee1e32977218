"""What a datamodule reads from its Trainer, with the values a script without one gets."""

from __future__ import annotations

from typing import Any


def from_trainer(module: Any, attribute: str, default: Any) -> Any:
    """``module.trainer``'s ``attribute`` (``training``, ``max_steps`` ...), or ``default``."""
    trainer = getattr(module, "trainer", None)
    return default if trainer is None else getattr(trainer, attribute)


def current_epoch(module: Any) -> int:
    """The Trainer's epoch (0 without one)."""
    return from_trainer(module, "current_epoch", 0)


def global_rank(module: Any) -> int:
    """This process's rank among all processes (0 without a Trainer)."""
    return from_trainer(module, "global_rank", 0)


def world_size(module: Any) -> int:
    """How many processes train (1 without a Trainer)."""
    return from_trainer(module, "world_size", 1)
