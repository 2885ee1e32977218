"""``PNGPredictionWriter``: each device writes the images ``trainer.predict`` generated."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from ddpm_lightning.utils.images import image_file_name, save_png
from ddpm_lightning.utils.overwrite_guard import refuse_to_overwrite


class PNGPredictionWriter(BasePredictionWriter):
    """Write ``<output_dir>/<index:05d>.png`` per generated image, each rank its own shard.

    A conditional model's files carry the class too: ``00003_red.png``.

    Args:
        output_dir: the folder for the PNG files.
        overwrite: replace files of an earlier prediction run (else they stop it at once).
    """

    def __init__(self, output_dir: str = "samples", overwrite: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.overwrite = overwrite
        #: Images this process has written.
        self.written = 0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Refuse an earlier run's images here: every rank finishes setup before any writes."""
        advice = (
            "Choose another output folder (--output.output_dir), or replace them "
            "(--output.overwrite_output_dir true; overwrite=True in Python)."
        )
        refuse_to_overwrite(sorted(self.output_dir.glob("*.png")), self.overwrite, advice)
        self.written = 0

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Save the batch's uint8 (B, C, H, W) images under their global index (and class)."""
        indices = prediction["index"].tolist()
        names = prediction.get("class_names") or [None] * len(indices)
        for image, index, name in zip(prediction["images"], indices, names):
            save_png(image, self.output_dir / image_file_name(index, name))
            self.written += 1

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        """Say what an interrupted prediction kept: every finished batch is on disk."""
        print(
            f"Prediction stopped ({type(exception).__name__}): rank {trainer.global_rank} wrote "
            f"{self.written} images to {self.output_dir}.",
            file=sys.stderr,
        )
