"""``PipelineExportCallback``: the diffusers pipeline folder, written atomically during fit."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from ddpm_lightning.callbacks.epoch_schedule import is_due
from ddpm_lightning.utils.atomic_export import PIPELINE_MARKER
from ddpm_lightning.utils.averaged_weights import averaged_weights
from ddpm_lightning.utils.checks import check_at_least
from ddpm_lightning.utils.overwrite_guard import RUN_ADVICE, refuse_to_overwrite

#: Called on global rank zero after each export with (trainer, folder, epoch).
ExportListener = Callable[[Trainer, Path, int], None]


class PipelineExportCallback(Callback):
    """Every ``save_model_epochs`` epochs and after the last, save the pipeline atomically.

    Args:
        output_dir: the folder to write the pipeline into (the tutorial's ``output_dir``).
        save_model_epochs: export every N epochs (the tutorial's 30).
        overwrite_output_dir: replace an earlier run's pipeline (a resumed run always may).
    """

    def __init__(
        self,
        output_dir: str = "ddpm-butterflies-128",
        save_model_epochs: int = 30,
        overwrite_output_dir: bool = False,
    ) -> None:
        check_at_least("save_model_epochs", save_model_epochs, 1)
        self.output_dir = Path(output_dir)
        self.save_model_epochs = save_model_epochs
        self.overwrite_output_dir = overwrite_output_dir
        self.listeners: list[ExportListener] = []
        self.last_export_epoch: int | None = None

    def add_listener(self, listener: ExportListener) -> None:
        """Call ``listener`` after each successful export (the Hub push uses this), once."""
        if listener not in self.listeners:
            self.listeners.append(listener)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Stop before training over an earlier run's pipeline (``ckpt_path`` is known now)."""
        resuming = trainer.ckpt_path is not None
        refuse_to_overwrite(
            [self.output_dir / PIPELINE_MARKER], self.overwrite_output_dir or resuming, RUN_ADVICE
        )

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Export when due, on global rank zero, with the EMA weights swapped in."""
        if not is_due(trainer, self.save_model_epochs):
            return
        with averaged_weights(trainer, pl_module):
            if trainer.is_global_zero:
                pl_module.save_pretrained(self.output_dir, overwrite=True)
                self.last_export_epoch = trainer.current_epoch
        trainer.strategy.barrier("pipeline_exported")
        if trainer.is_global_zero:
            for listener in self.listeners:
                listener(trainer, self.output_dir, trainer.current_epoch)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Say where the exported pipeline is, which class loads it and how to sample it."""
        if self.last_export_epoch is None or trainer.interrupted:
            return
        index = json.loads((self.output_dir / PIPELINE_MARKER).read_text())
        rank_zero_info(
            f"{index['_class_name']} of epoch {self.last_export_epoch}: {self.output_dir} "
            f"(ddpm-lightning sample --source {self.output_dir} samples it)"
        )
