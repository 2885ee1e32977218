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
    """Inside the block the module holds the averaged weights, when the Trainer averages any.

    Yields True when it does. Works with :class:`~ddpm_lightning.callbacks.EMA` and any of
    Lightning's ``WeightAveraging`` callbacks (``EMAWeightAveraging`` too); only ``EMA`` says
    when validation has already swapped the averaged weights in, so only it is safe to use
    from validation hooks.
    """
    callbacks = trainer.callbacks if trainer is not None else []
    active = [
        cb for cb in callbacks if isinstance(cb, WeightAveraging) and averaged_model(cb) is not None
    ]
    if not active:
        yield False
        return
    callback = active[0]
    if getattr(callback, "average_in_module", False):
        # Inside validation the averaged weights are already in place: swapping would undo it.
        yield True
        return
    swap_weights(callback, pl_module)
    try:
        yield True
    finally:
        swap_weights(callback, pl_module)
