"""EMA of the UNet weights: Lightning's ``WeightAveraging`` with diffusers' decay warm-up."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn

from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.private_apis import averaged_model

__all__ = ["EMA", "ema_decay"]


def ema_decay(
    step: int, max_decay: float, use_warmup: bool, inv_gamma: float, power: float
) -> float:
    """Diffusers' ``EMAModel`` decay after ``step`` updates, capped at ``max_decay``."""
    if not use_warmup:
        return max_decay
    return min(max_decay, 1.0 - (1.0 + step / inv_gamma) ** -power)


class EMA(WeightAveraging):
    """EMA of the weights per optimizer step: Lightning's ``WeightAveraging``, diffusers' warm-up.

    Args:
        decay: the largest decay (the peers' ``ema_max_decay``, 0.9999).
        use_warmup: grow the decay as 1 - (1 + step / inv_gamma) ** -power.
        inv_gamma: the warm-up's time scale.
        power: the warm-up's exponent (3/4 as in diffusers; 2/3 suits very long runs).
        update_every_n_steps: update after every n-th optimizer step.
        device: where the averaged copy lives (the model's if None; "cpu" saves GPU memory).
    """

    def __init__(
        self,
        decay: float = 0.9999,
        use_warmup: bool = True,
        inv_gamma: float = 1.0,
        power: float = 0.75,
        update_every_n_steps: int = 1,
        device: str | None = None,
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise InvalidSettingError(f"decay must be in [0, 1), got {decay}.")
        self.decay = decay
        self.use_warmup = use_warmup
        self.inv_gamma = inv_gamma
        self.power = power
        self.update_every_n_steps = update_every_n_steps
        super().__init__(device=device, use_buffers=True, multi_avg_fn=self._lerp_towards_current)
        # True while Lightning has swapped the averaged weights into the module (validation).
        self.average_in_module = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Start each fit with the module's own weights in place."""
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            self.average_in_module = False

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Lightning swaps the averaged weights in for validation: remember that."""
        super().on_validation_epoch_start(trainer, pl_module)
        self.average_in_module = averaged_model(self) is not None

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Lightning swaps them out again after validation."""
        super().on_validation_epoch_end(trainer, pl_module)
        self.average_in_module = False

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """Update after every ``update_every_n_steps``-th optimizer step, never at epoch end."""
        return step_idx is not None and (step_idx + 1) % self.update_every_n_steps == 0

    def current_decay(self, num_updates: int) -> float:
        """The decay applied at the update after ``num_updates`` earlier ones."""
        return ema_decay(num_updates, self.decay, self.use_warmup, self.inv_gamma, self.power)

    def _lerp_towards_current(
        self, averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor
    ) -> None:
        decay = self.current_decay(int(num_averaged))
        floating = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floating:
            averaged_float, current_float = zip(*floating)
            # torch's EMA step (one foreach lerp), with this update's warmed-up decay.
            get_ema_multi_avg_fn(decay)(list(averaged_float), list(current_float), num_averaged)
