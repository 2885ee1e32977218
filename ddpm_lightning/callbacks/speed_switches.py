"""``SpeedSwitches``: process-wide and memory-layout speed settings, applied before work starts."""

from __future__ import annotations

import weakref
from typing import Literal, get_args

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from ddpm_lightning.errors import InvalidSettingError

MatmulPrecision = Literal["highest", "high", "medium"]
#: UNets compiled in place already (a second ``compile`` would wrap the compiled call again).
_COMPILED: weakref.WeakSet = weakref.WeakSet()


class SpeedSwitches(Callback):
    """Speed settings that are not the model's hyperparameters: checkpoints stay the same.

    Applied in ``setup`` (fit, validate, predict), once per module.

    Args:
        channels_last: channels-last UNet weights (faster convolutions on tensor cores; the
            convolutions then take their inputs channels-last too).
        compile_unet: ``torch.compile`` the UNet in place (same state dict; minutes to compile).
        gradient_checkpointing: recompute the UNet's activations in the backward pass: less
            memory for larger images or batches, for more compute per step.
        float32_matmul_precision: ``high`` allows TF32 on Ampere+ GPUs (process-wide).
    """

    def __init__(
        self,
        channels_last: bool = False,
        compile_unet: bool = False,
        gradient_checkpointing: bool = False,
        float32_matmul_precision: MatmulPrecision | None = None,
    ) -> None:
        if float32_matmul_precision not in (None, *get_args(MatmulPrecision)):
            raise InvalidSettingError(
                f"Unknown float32_matmul_precision {float32_matmul_precision!r}; choose one of "
                f"{list(get_args(MatmulPrecision))}."
            )
        self.channels_last = channels_last
        self.compile_unet = compile_unet
        self.gradient_checkpointing = gradient_checkpointing
        self.float32_matmul_precision = float32_matmul_precision

    @property
    def any_on(self) -> bool:
        """Whether any switch is set (the CLI adds the callback only then)."""
        return bool(
            self.channels_last
            or self.compile_unet
            or self.gradient_checkpointing
            or self.float32_matmul_precision
        )

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Apply the switches to the module's UNet and the process."""
        apply_speed_switches(pl_module.unet, self)


def apply_speed_switches(unet: torch.nn.Module, switches: SpeedSwitches) -> None:
    """Set the switches on ``unet`` (and TF32 on the process); a second call changes nothing."""
    if switches.float32_matmul_precision:
        torch.set_float32_matmul_precision(switches.float32_matmul_precision)
    if switches.channels_last:
        unet.to(memory_format=torch.channels_last)
    if switches.gradient_checkpointing and not unet.is_gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if switches.compile_unet and unet not in _COMPILED:
        unet.compile()
        _COMPILED.add(unet)
