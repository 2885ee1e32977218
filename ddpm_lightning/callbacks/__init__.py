"""Callbacks: what happens around training (EMA, sample grids, exports, Hub pushes, metrics)."""

from ddpm_lightning.callbacks.ema import EMA, averaged_weights

__all__ = ["EMA", "averaged_weights"]
