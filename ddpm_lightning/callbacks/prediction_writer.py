"""``PNGPredictionWriter``: each device writes the images ``trainer.predict`` generated."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from ddpm_lightning.callbacks.sample_grid import save_png_atomically


class PNGPredictionWriter(BasePredictionWriter):
    """Write ``<output_dir>/<index:05d>.png`` per generated image, as each batch finishes.

    Every rank writes its own shard (indices are global, so names never collide). Existing
    files are never overwritten silently: the run stops unless ``overwrite`` is True.

    Args:
        output_dir: the folder for the PNG files.
        overwrite: replace files of an earlier prediction run.
    """

    def __init__(self, output_dir: str = "samples", overwrite: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.overwrite = overwrite
        self.written: list[Path] = []

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
        """Save the batch's uint8 (B, C, H, W) images under their global index."""
        del pl_module, batch_indices, batch, batch_idx, dataloader_idx, trainer
        for image, index in zip(prediction["images"], prediction["index"].tolist()):
            path = self.output_dir / f"{index:05d}.png"
            if path.exists() and not self.overwrite:
                raise FileExistsError(
                    f"{str(path)!r} already exists. Choose another output folder or pass "
                    "overwrite=True to replace the images of the earlier run."
                )
            pixels = image.permute(1, 2, 0).numpy()
            save_png_atomically(
                Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels), path
            )
            self.written.append(path)
