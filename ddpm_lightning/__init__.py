"""ddpm_lightning: the diffusers "train a diffusion model" tutorial as Lightning parts."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ButterfliesDataModule", "DDPMModule", "ImageDataModule"]
__version__ = "0.1.0"

#: Imported on first use, so the command line starts without loading torch for --help.
_LAZY = {
    "ButterfliesDataModule": "ddpm_lightning.data",
    "ImageDataModule": "ddpm_lightning.data",
    "DDPMModule": "ddpm_lightning.models",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ddpm_lightning' has no attribute {name!r}")
