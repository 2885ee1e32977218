"""The tutorial's optimiser: AdamW and a per-step ``get_scheduler`` learning-rate schedule."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from diffusers.optimization import SchedulerType, get_scheduler

from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.utils.checks import check_at_least

#: ``diffusers.optimization.get_scheduler`` names that need no extra rules.
LR_SCHEDULERS = tuple(t.value for t in SchedulerType if t.value != "piecewise_constant")


def check_optimizer_settings(lr_scheduler: str, learning_rate: float, warmup_steps: int) -> None:
    """Refuse an unknown schedule or a negative rate or warm-up when the module is made."""
    if lr_scheduler not in LR_SCHEDULERS:
        raise InvalidSettingError(
            f"Unknown lr_scheduler {lr_scheduler!r}; choose one of {list(LR_SCHEDULERS)}."
        )
    check_at_least("learning_rate", learning_rate, 0.0)
    check_at_least("lr_warmup_steps", warmup_steps, 0)


def adamw_with_schedule(
    parameters: Iterable[torch.nn.Parameter],
    hparams: Mapping[str, Any],
    trainer: Any,
    device: torch.device,
) -> dict[str, Any]:
    """AdamW and its LR schedule over the Trainer's real number of optimizer steps.

    ``estimated_stepping_batches`` counts steps of the effective batch, so the schedule's
    length is right under any devices, nodes and gradient accumulation.
    """
    # Lightning's mixed precision cannot clip a fused AdamW's gradients (it unscales them
    # internally): by default fuse only where nothing clips (and on CUDA, where it exists).
    clips = hparams["max_grad_norm"] is not None or trainer.gradient_clip_val is not None
    fused = hparams["adam_fused"]
    if fused is None:
        fused = device.type == "cuda" and not clips
    elif fused and clips and "mixed" in str(trainer.precision):
        raise InvalidSettingError(
            f"adam_fused: true cannot be combined with gradient clipping under {trainer.precision} "
            "precision (the fused kernel unscales gradients itself). Set adam_fused to null "
            "(foreach AdamW), or max_grad_norm: null to train without clipping."
        )
    optimizer = torch.optim.AdamW(
        parameters,
        lr=hparams["learning_rate"],
        betas=tuple(hparams["adam_betas"]),
        weight_decay=hparams["adam_weight_decay"],
        eps=hparams["adam_epsilon"],
        fused=fused,
    )
    total_steps = trainer.estimated_stepping_batches
    known = total_steps != float("inf")
    name = hparams["lr_scheduler"]
    if not known and name not in ("constant", "constant_with_warmup"):
        raise InvalidSettingError(
            f"lr_scheduler {name!r} needs the number of training steps: set max_epochs or "
            "max_steps on the Trainer (or use lr_scheduler: constant)."
        )
    schedule = get_scheduler(
        name,
        optimizer,
        num_warmup_steps=hparams["lr_warmup_steps"],
        num_training_steps=int(total_steps) if known else None,
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
