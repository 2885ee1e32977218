"""``SampleGridCallback``: the tutorial's ``samples/NNNN.png`` grid, on one device or many."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from PIL import Image
from torchvision.utils import make_grid

from ddpm_lightning.callbacks.ema import averaged_weights
from ddpm_lightning.callbacks.epoch_schedule import is_due
from ddpm_lightning.callbacks.output_guard import refuse_to_overwrite
from ddpm_lightning.sampling import check_sampler_name, to_uint8


def grid_shape(num_images: int, rows: int | None, cols: int | None) -> tuple[int, int]:
    """Rows and columns for a grid: square by default (4 x 4 for the tutorial's 16)."""
    if rows and cols:
        if rows * cols < num_images:
            raise ValueError(f"A {rows}x{cols} grid cannot hold {num_images} images.")
        return rows, cols
    if cols:
        return math.ceil(num_images / cols), cols
    if rows:
        return rows, math.ceil(num_images / rows)
    cols = math.ceil(math.sqrt(num_images))
    return math.ceil(num_images / cols), cols


def sample_on_all_ranks(
    trainer: Trainer,
    pl_module: LightningModule,
    seeds: list[int],
    num_inference_steps: int,
    sampler: str,
) -> torch.Tensor:
    """Generate one image per seed, the seeds shared out between ranks; all ranks get all.

    Every rank samples ``ceil(len(seeds) / world_size)`` images at once, so no rank idles
    in a collective (and into a timeout) while another samples alone. Image ``i`` comes from
    ``seeds[i]`` whatever the number of ranks. Uses the EMA weights when present, the
    Trainer's precision, and its own generators (the global RNG is untouched).
    """
    world_size, rank = trainer.world_size, trainer.global_rank
    per_rank = math.ceil(len(seeds) / world_size)
    # Rank r takes images r, r + world_size, ...; the short last share is padded by repeats.
    mine = [seeds[i] for i in range(rank, len(seeds), world_size)]
    mine += [seeds[-1]] * (per_rank - len(mine))
    with averaged_weights(trainer, pl_module), trainer.precision_plugin.forward_context():
        images = pl_module.generate_from_seeds(mine, num_inference_steps, sampler)
    images = images.float()
    if world_size > 1:
        gathered = trainer.strategy.all_gather(images)  # (world, per_rank, C, H, W)
        images = gathered.transpose(0, 1).reshape(-1, *images.shape[1:])
    return images[: len(seeds)]


def save_png_atomically(image: Image.Image, path: Path) -> None:
    """Write a PNG through a temporary file, so a crash never leaves a truncated one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    image.save(temporary, format="PNG")
    os.replace(temporary, path)


class SampleGridCallback(Callback):
    """Every ``save_image_epochs`` epochs and after the last, sample a grid and save it.

    The grid goes to ``<output_dir>/samples/<epoch:04d>.png`` and to every logger that takes
    images (TensorBoard's ``add_image``, or a ``log_image`` method such as W&B's).

    Args:
        output_dir: the run's folder (the tutorial's ``output_dir``).
        save_image_epochs: sample every N epochs (the tutorial's 10).
        eval_batch_size: images in the grid (the tutorial's 16).
        seed: image i of every grid comes from seed + i, so grids are comparable across epochs.
        sampler: ``ddpm`` (the tutorial), ``ddim``, ``dpm-solver++`` or ``unipc``.
        num_inference_steps: sampler steps (the tutorial's 1000 DDPM steps; 20-50 with the
            faster samplers give a similar picture in a fraction of the time).
        rows: grid rows (square by default).
        cols: grid columns (square by default).
        overwrite_output_dir: replace grids left in ``output_dir`` by an earlier run (a
            resumed run always may); otherwise fit stops at once with an error.
    """

    def __init__(
        self,
        output_dir: str = "ddpm-butterflies-128",
        save_image_epochs: int = 10,
        eval_batch_size: int = 16,
        seed: int = 0,
        sampler: str = "ddpm",
        num_inference_steps: int = 1000,
        rows: int | None = None,
        cols: int | None = None,
        overwrite_output_dir: bool = False,
    ) -> None:
        check_sampler_name(sampler)
        if save_image_epochs < 1 or eval_batch_size < 1:
            raise ValueError("save_image_epochs and eval_batch_size must be at least 1.")
        self.output_dir = Path(output_dir)
        self.save_image_epochs = save_image_epochs
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.sampler = sampler
        self.num_inference_steps = num_inference_steps
        self.rows, self.cols = grid_shape(eval_batch_size, rows, cols)
        self.overwrite_output_dir = overwrite_output_dir
        self.last_grid_path: Path | None = None

    def grid_path(self, epoch: int) -> Path:
        """Where the grid of ``epoch`` (0-based, as in the tutorial) is written."""
        return self.output_dir / "samples" / f"{epoch:04d}.png"

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Stop before training if an earlier run's grids would be overwritten.

        Checked here, not in ``setup``: only now does ``trainer.ckpt_path`` say whether this
        run resumes the earlier one.
        """
        refuse_to_overwrite(trainer, self.grid_path(0), self.overwrite_output_dir)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Sample and save when due; every rank samples its share, rank 0 writes."""
        if not is_due(trainer, self.save_image_epochs):
            return
        seeds = [self.seed + i for i in range(self.eval_batch_size)]
        images = sample_on_all_ranks(
            trainer, pl_module, seeds, self.num_inference_steps, self.sampler
        )
        if trainer.is_global_zero:
            grid = make_grid(images.cpu(), nrow=self.cols, padding=0)
            self._write(trainer, grid, trainer.current_epoch)
        trainer.strategy.barrier("sample_grid_written")

    def _write(self, trainer: Trainer, grid: torch.Tensor, epoch: int) -> None:
        pixels = to_uint8(grid).permute(1, 2, 0).numpy()
        image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        path = self.grid_path(epoch)
        save_png_atomically(image, path)
        self.last_grid_path = path
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                experiment.add_image("samples", to_uint8(grid), trainer.global_step)
            elif hasattr(logger, "log_image"):
                logger.log_image(key="samples", images=[image], step=trainer.global_step)
