"""The tutorial's output settings, turned into the callbacks and logger that carry them out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ThroughputMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from ddpm_lightning.callbacks.ema import EMA
from ddpm_lightning.callbacks.fid import FIDCallback
from ddpm_lightning.callbacks.pipeline_export import PipelineExportCallback
from ddpm_lightning.callbacks.push_to_hub import PushToHubCallback
from ddpm_lightning.callbacks.resume_checkpoint import ResumeCheckpoint
from ddpm_lightning.callbacks.sample_grid import SampleGridCallback
from ddpm_lightning.sampling import check_sampler_name
from ddpm_lightning.utils.checks import check_at_least


def _images_in(batch: Any) -> int:
    return int(batch["images"].shape[0])


class ImageThroughputMonitor(ThroughputMonitor):
    """``ThroughputMonitor`` for ``{"images": (B, C, H, W)}`` batches: images/s, FLOP/s, MFU.

    Args:
        window_size: batches averaged per reading.
        flops_per_image: FLOPs per training image, forward and backward (3.72e11: tutorial UNet).
    """

    def __init__(self, window_size: int = 50, flops_per_image: float | None = None) -> None:
        super().__init__(batch_size_fn=_images_in, window_size=window_size)
        self.flops_per_image = flops_per_image

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Tell Lightning the batch's FLOPs (if known) before it updates the throughput."""
        flops = self.flops_per_image
        pl_module.flops_per_batch = None if flops is None else flops * _images_in(batch)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


@dataclass
class TrainingOutputs:
    """What the tutorial's ``TrainingConfig`` says about outputs (the CLI's ``--output.*``).

    ``callbacks()`` and ``logger()`` write grids, the pipeline, Hub pushes, TensorBoard logs in
    ``output_dir/logs`` and ``checkpoints/`` (``epochNNNN.ckpt``, ``last.ckpt``).

    Args:
        output_dir: the run's folder; also the pipeline folder, as in the tutorial.
        save_image_epochs: a sample grid every N epochs, and after the last.
        save_model_epochs: a pipeline export every N epochs, and after the last.
        eval_batch_size: images per sample grid.
        seed: seed of the sample grids (image i from seed + i).
        push_to_hub: push each export to the Hub; needs ``hub_model_id``.
        hub_model_id: ``user/name`` of the Hub repository.
        hub_private_repo: create the Hub repository as private.
        overwrite_output_dir: allow replacing grids and a pipeline of an earlier run.
        use_ema: keep an EMA of the weights (diffusers' warm-up); grids and exports use it.
        ema_max_decay: the EMA's largest decay.
        sampler: the sampler of the grids (the tutorial's ``ddpm``).
        num_inference_steps: the grids' sampler steps (the tutorial's 1000).
        checkpoint_every_n_epochs: ``epochNNNN.ckpt`` every N epochs (save_model_epochs if None).
        checkpoint_every_n_train_steps: also refresh ``last.ckpt`` every N steps within an epoch.
        throughput_window: batches averaged for each images/s reading.
        fid_every_n_epochs: FID and KID every N epochs (off if None); keeps ``best-fid.ckpt``.
        fid_num_images: images generated for each FID (split across devices).
        class_labels: a class-conditional model's grid rows: these classes (ids or names;
            None: the first ones).
        guidance_scale: classifier-free guidance of a conditional model's grids and FID.
    """

    output_dir: str | Path = "ddpm-butterflies-128"
    save_image_epochs: int = 10
    save_model_epochs: int = 30
    eval_batch_size: int = 16
    seed: int = 0
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_private_repo: bool = False
    overwrite_output_dir: bool = False
    use_ema: bool = False
    ema_max_decay: float = 0.9999
    sampler: str = "ddpm"
    num_inference_steps: int = 1000
    checkpoint_every_n_epochs: int | None = None
    throughput_window: int = 20
    fid_every_n_epochs: int | None = None
    fid_num_images: int = 1000
    checkpoint_every_n_train_steps: int | None = None
    class_labels: list[str] | None = None
    guidance_scale: float = 1.0

    def __post_init__(self) -> None:
        """Check every setting before any work; None means the documented default or off."""
        check_sampler_name(self.sampler)
        counts = """save_image_epochs save_model_epochs eval_batch_size num_inference_steps
            checkpoint_every_n_epochs checkpoint_every_n_train_steps fid_every_n_epochs"""
        minimums = dict.fromkeys(counts.split(), 1) | {"fid_num_images": 2, "throughput_window": 2}
        for name, minimum in minimums.items():
            if getattr(self, name) is not None:
                check_at_least(name, getattr(self, name), minimum)
        self.output_dir = Path(self.output_dir)
        self.checkpoint_every_n_epochs = self.checkpoint_every_n_epochs or self.save_model_epochs

    def callbacks(self) -> list[Callback]:
        """EMA, grid, export (after the grid: its push carries it), push, checkpoints, monitors."""
        callbacks: list[Callback] = []
        checkpoints = str(self.output_dir / "checkpoints")
        if self.use_ema:
            callbacks.append(EMA(decay=self.ema_max_decay))
        output_dir, overwrite = str(self.output_dir), self.overwrite_output_dir
        callbacks += [
            SampleGridCallback(
                output_dir=output_dir,
                save_image_epochs=self.save_image_epochs,
                eval_batch_size=self.eval_batch_size,
                seed=self.seed,
                sampler=self.sampler,
                num_inference_steps=self.num_inference_steps,
                overwrite_output_dir=overwrite,
                class_labels=self.class_labels,
                guidance_scale=self.guidance_scale,
            ),
            PipelineExportCallback(output_dir, self.save_model_epochs, overwrite),
        ]
        if self.push_to_hub and self.hub_model_id:
            callbacks.append(PushToHubCallback(self.hub_model_id, self.hub_private_repo))
        elif self.push_to_hub:
            rank_zero_warn("push_to_hub is on but hub_model_id is not set: nothing will be pushed.")
        if self.fid_every_n_epochs:
            callbacks += [
                FIDCallback(
                    every_n_epochs=self.fid_every_n_epochs,
                    num_images=self.fid_num_images,
                    guidance_scale=self.guidance_scale,
                ),
                ModelCheckpoint(checkpoints, "best-fid", monitor="val/fid", mode="min"),
            ]
        callbacks += [
            ModelCheckpoint(
                dirpath=checkpoints,
                filename="epoch{epoch:04d}",
                auto_insert_metric_name=False,
                every_n_epochs=self.checkpoint_every_n_epochs,
                save_top_k=-1,
            ),
            ResumeCheckpoint(checkpoints, self.checkpoint_every_n_train_steps),
            LearningRateMonitor(logging_interval="step"),
            ImageThroughputMonitor(window_size=self.throughput_window),
        ]
        return callbacks

    def logger(self) -> TensorBoardLogger:
        """TensorBoard logs in ``output_dir/logs`` (the tutorial's ``project_dir``)."""
        # No hp_metric placeholder: TensorBoard would show a card stuck at -1 before the loss.
        return TensorBoardLogger(str(self.output_dir), name="logs", default_hp_metric=False)
