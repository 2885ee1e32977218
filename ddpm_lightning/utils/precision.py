"""Precision names: Lightning's, the short ones users type, and the autocast dtype of each."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from ddpm_lightning.errors import InvalidSettingError

#: Short names (as in benchmarks and Accelerate's ``mixed_precision``) -> Lightning's names.
LIGHTNING_PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}
#: Lightning's mixed precision names -> the dtype autocast runs in.
AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
#: The precisions generation takes without a Trainer.
PRECISIONS: tuple[str, ...] = ("32", "32-true", *AUTOCAST_DTYPES)


def autocast_context(
    precision: str, device: torch.device | str
) -> Callable[[], AbstractContextManager]:
    """A factory of the autocast context for ``precision`` (a Lightning or short name)."""
    precision = LIGHTNING_PRECISION.get(precision, precision)
    if precision not in PRECISIONS:
        raise InvalidSettingError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    dtype = AUTOCAST_DTYPES.get(precision)
    if dtype is None:
        return contextlib.nullcontext
    device_type = torch.device(device).type
    return lambda: torch.autocast(device_type, dtype=dtype)
