"""The tutorial's output settings (the CLI's ``--output.*``): what a run writes, and where."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lightning.pytorch import Callback
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins import CheckpointIO
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from ddpm_lightning.callbacks import (
    EMA,
    FIDCallback,
    ImageThroughputMonitor,
    InterruptHandler,
    OutputFolderLock,
    PipelineExportCallback,
    PushToHubCallback,
    ResumeCheckpoint,
    SampleGridCallback,
)
from ddpm_lightning.plugins import AtomicCheckpointIO
from ddpm_lightning.quality import FIDSettings
from ddpm_lightning.sampling import SamplingSettings
from ddpm_lightning.utils.checks import check_at_least


@dataclass
class TrainingOutputs:
    """What the tutorial's ``TrainingConfig`` says about outputs (the CLI's ``--output.*``).

    Configuration, not a callback: ``callbacks()``, ``plugins()`` and ``logger()`` make what
    writes grids, the pipeline, Hub pushes, TensorBoard logs in ``output_dir/logs`` and
    ``checkpoints/`` (``epochNNNN.ckpt``, ``last.ckpt``, atomically).

    Args:
        output_dir: the run's folder; also the pipeline folder, as in the tutorial.
        save_image_epochs: a sample grid every N epochs, and after the last.
        save_model_epochs: a pipeline export every N epochs, and after the last.
        eval_batch_size: images per sample grid.
        sampling: how the grids are sampled: sampler (the tutorial's ``ddpm``), steps (its
            1000), seed (image i from seed + i), guidance and batch size.
        class_labels: a class-conditional model's grid rows: these classes (ids or names;
            None: the first ones).
        push_to_hub: push each export to the Hub; needs ``hub_model_id``.
        hub_model_id: ``user/name`` of the Hub repository.
        hub_private_repo: create the Hub repository as private.
        overwrite_output_dir: allow replacing grids and a pipeline of an earlier run.
        use_ema: keep an EMA of the weights (diffusers' warm-up); grids and exports use it.
        ema_max_decay: the EMA's largest decay.
        checkpoint_every_n_epochs: ``epochNNNN.ckpt`` every N epochs (save_model_epochs if None).
        checkpoint_every_n_train_steps: also refresh ``last.ckpt`` every N steps within an epoch.
        throughput_window: batches averaged for each images/s reading.
        fid: FID and KID during training (None: off), every ``fid.every_n_epochs`` epochs;
            keeps ``best-fid.ckpt``.
    """

    output_dir: str | Path = "ddpm-butterflies-128"
    save_image_epochs: int = 10
    save_model_epochs: int = 30
    eval_batch_size: int = 16
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    class_labels: list[str] | None = None
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_private_repo: bool = False
    overwrite_output_dir: bool = False
    use_ema: bool = False
    ema_max_decay: float = 0.9999
    checkpoint_every_n_epochs: int | None = None
    throughput_window: int = 20
    checkpoint_every_n_train_steps: int | None = None
    fid: FIDSettings | None = None

    def __post_init__(self) -> None:
        """Check every setting before any work; None means the documented default or off."""
        counts = """save_image_epochs save_model_epochs eval_batch_size checkpoint_every_n_epochs
            checkpoint_every_n_train_steps"""
        minimums = dict.fromkeys(counts.split(), 1) | {"throughput_window": 2}
        for name, minimum in minimums.items():
            if getattr(self, name) is not None:
                check_at_least(name, getattr(self, name), minimum)
        self.output_dir = Path(self.output_dir)
        self.checkpoint_every_n_epochs = self.checkpoint_every_n_epochs or self.save_model_epochs

    def callbacks(self) -> list[Callback]:
        """EMA, grid, export (after the grid: its push carries it), push, checkpoints, monitors."""
        callbacks: list[Callback] = [OutputFolderLock(self.output_dir)]
        checkpoints = str(self.output_dir / "checkpoints")
        if self.use_ema:
            callbacks.append(EMA(decay=self.ema_max_decay))
        output_dir, overwrite = str(self.output_dir), self.overwrite_output_dir
        callbacks += [
            SampleGridCallback(
                output_dir=output_dir,
                save_image_epochs=self.save_image_epochs,
                eval_batch_size=self.eval_batch_size,
                sampling=self.sampling,
                overwrite_output_dir=overwrite,
                class_labels=self.class_labels,
            ),
            PipelineExportCallback(output_dir, self.save_model_epochs, overwrite),
        ]
        if self.push_to_hub and self.hub_model_id:
            callbacks.append(PushToHubCallback(self.hub_model_id, self.hub_private_repo))
        elif self.push_to_hub:
            rank_zero_warn("push_to_hub is on but hub_model_id is not set: nothing will be pushed.")
        if self.fid is not None:
            monitor = f"{self.fid.metric_prefix}fid"
            callbacks += [
                FIDCallback(self.fid),
                ModelCheckpoint(checkpoints, "best-fid", monitor=monitor, mode="min"),
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
            InterruptHandler(),
            LearningRateMonitor(logging_interval="step"),
            ImageThroughputMonitor(window_size=self.throughput_window),
        ]
        return callbacks

    def plugins(self, given: list | None = None) -> list:
        """``given`` plus atomic checkpoint writes, unless ``given`` has a CheckpointIO already."""
        given = list(given or [])
        if any(isinstance(plugin, CheckpointIO) for plugin in given):
            return given
        return [*given, AtomicCheckpointIO()]

    def logger(self) -> TensorBoardLogger:
        """TensorBoard logs in ``output_dir/logs`` (the tutorial's ``project_dir``)."""
        # No hp_metric placeholder: TensorBoard would show a card stuck at -1 before the loss.
        return TensorBoardLogger(str(self.output_dir), name="logs", default_hp_metric=False)
