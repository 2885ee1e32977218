"""Lightning's tqdm bar without the logger's version number, which users cannot act on."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar


class TrainingProgressBar(TQDMProgressBar):
    """``TQDMProgressBar`` showing the logged metrics (loss, FID) but not ``v_num``."""

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """The bar's metrics, less the logger version."""
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics
