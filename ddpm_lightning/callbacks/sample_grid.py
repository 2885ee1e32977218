"""``SampleGridCallback``: the tutorial's ``samples/NNNN.png`` grid, on one device or many."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from ddpm_lightning.callbacks.epoch_schedule import is_due
from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.sampling import SamplingSettings
from ddpm_lightning.sampling.seeds import image_seeds
from ddpm_lightning.utils.images import grid_shape, image_grid, save_png, to_pil, to_uint8
from ddpm_lightning.utils.overwrite_guard import RUN_ADVICE, refuse_to_overwrite


class SampleGridCallback(Callback):
    """Every ``save_image_epochs`` epochs and after the last, save ``samples/<epoch:04d>.png``.

    Args:
        output_dir: the run's folder (the tutorial's ``output_dir``).
        save_image_epochs: sample every N epochs (the tutorial's 10).
        eval_batch_size: images in the grid (the tutorial's 16).
        sampling: sampler, steps, seed (image i of every grid comes from seed + i, so grids
            are comparable across epochs), guidance and batch size; the tutorial's 1000 DDPM
            steps by default.
        rows: grid rows (square by default).
        cols: grid columns (square by default).
        overwrite_output_dir: replace an earlier run's grids (a resumed run always may).
        class_labels: a class-conditional model's grid has a row per class: these classes (ids
            or names; None: the first ones), up to the grid's rows.
    """

    def __init__(
        self,
        output_dir: str = "ddpm-butterflies-128",
        save_image_epochs: int = 10,
        eval_batch_size: int = 16,
        sampling: SamplingSettings | None = None,
        rows: int | None = None,
        cols: int | None = None,
        overwrite_output_dir: bool = False,
        class_labels: list[int | str] | None = None,
    ) -> None:
        if save_image_epochs < 1 or eval_batch_size < 1:
            raise InvalidSettingError("save_image_epochs and eval_batch_size must be at least 1.")
        self.output_dir = Path(output_dir)
        self.save_image_epochs = save_image_epochs
        self.eval_batch_size = eval_batch_size
        self.sampling = sampling or SamplingSettings()
        self.rows, self.cols = grid_shape(eval_batch_size, rows, cols)
        self.overwrite_output_dir = overwrite_output_dir
        self.class_labels = class_labels
        self.last_grid_path: Path | None = None

    def grid_path(self, epoch: int) -> Path:
        """Where the grid of ``epoch`` (0-based, as in the tutorial) is written."""
        return self.output_dir / "samples" / f"{epoch:04d}.png"

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Stop before training over an earlier run's grids (``ckpt_path`` is known now)."""
        grids = sorted((self.output_dir / "samples").glob("*.png"))
        resuming = trainer.ckpt_path is not None
        refuse_to_overwrite(grids, self.overwrite_output_dir or resuming, RUN_ADVICE)
        pl_module.classes.ids(self.class_labels)  # unknown classes fail now, not after an epoch
        pl_module.image_generator(self.sampling)  # and so do guidance and steps it cannot take

    def grid_labels(self, pl_module: LightningModule) -> list[int] | None:
        """A conditional model's label per grid image: a row per class; None if unconditional."""
        if not pl_module.classes.conditional:
            return None
        classes = pl_module.classes.ids(self.class_labels) or list(
            range(pl_module.classes.null_class)
        )
        return [label for label in classes[: self.rows] for _ in range(self.cols)]

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Sample and save when due; every rank samples its share, rank 0 writes."""
        if not is_due(trainer, self.save_image_epochs):
            return
        label = f"Sample grid, epoch {trainer.current_epoch}"
        generator = pl_module.image_generator(self.sampling, trainer, description=label)
        labels = self.grid_labels(pl_module)
        count = self.eval_batch_size if labels is None else len(labels)
        seeds = image_seeds(self.sampling.seed, count)
        images = generator.on_all_ranks(seeds, class_labels=labels)
        if trainer.is_global_zero:
            grid = image_grid(images, self.cols)
            self.last_grid_path = save_png(grid, self.grid_path(trainer.current_epoch))
            for logger in trainer.loggers:  # those that take images (TensorBoard, W&B) get it too
                experiment = getattr(logger, "experiment", None)
                if hasattr(experiment, "add_image"):
                    experiment.add_image("samples", to_uint8(grid), trainer.global_step)
                elif hasattr(logger, "log_image"):
                    (image,) = to_pil(grid.unsqueeze(0))
                    logger.log_image(key="samples", images=[image], step=trainer.global_step)
        trainer.strategy.barrier("sample_grid_written")

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Say where the last grid is: the run's result a user looks at first."""
        if self.last_grid_path is not None and not trainer.interrupted:
            rank_zero_info(f"Last sample grid: {self.last_grid_path}")
