"""Sample or export with the EMA weights: swap them into the module for a block."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import WeightAveraging

from ddpm_lightning.private_apis import averaged_model


@torch.no_grad()
def swap_weights(callback: WeightAveraging, pl_module: LightningModule) -> None:
    """Exchange the module's parameters and buffers with the callback's averaged copy."""
    average = averaged_model(callback)
    assert average is not None
    averaged = itertools.chain(average.module.parameters(), average.module.buffers())
    current = itertools.chain(pl_module.parameters(), pl_module.buffers())
    for averaged_tensor, current_tensor in zip(averaged, current):
        held = averaged_tensor.detach().clone()
        averaged_tensor.copy_(current_tensor)
        current_tensor.copy_(held)


@contextlib.contextmanager
def averaged_weights(trainer: Trainer | None, pl_module: LightningModule) -> Iterator[bool]:
    """Inside the block the module holds the averaged weights, if any (then it yields True).

    Only :class:`~ddpm_lightning.callbacks.EMA` knows when validation swapped them in already.
    """
    callbacks = trainer.callbacks if trainer is not None else []
    averaging = (cb for cb in callbacks if isinstance(cb, WeightAveraging))
    callback = next((cb for cb in averaging if averaged_model(cb) is not None), None)
    if callback is None or getattr(callback, "average_in_module", False):
        yield callback is not None
        return
    swap_weights(callback, pl_module)
    try:
        yield True
    finally:
        swap_weights(callback, pl_module)
