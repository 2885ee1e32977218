"""The tutorial's output settings, turned into the callbacks and logger that carry them out."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from ddpm_lightning.callbacks.ema import EMA
from ddpm_lightning.callbacks.fid import FIDCallback
from ddpm_lightning.callbacks.pipeline_export import PipelineExportCallback
from ddpm_lightning.callbacks.push_to_hub import PushToHubCallback
from ddpm_lightning.callbacks.resume_checkpoint import ResumeCheckpoint
from ddpm_lightning.callbacks.sample_grid import SampleGridCallback
from ddpm_lightning.callbacks.throughput import ImageThroughputMonitor
from ddpm_lightning.sampling import check_sampler_name
from ddpm_lightning.utils.checks import check_at_least


class TrainingOutputs:
    """What the tutorial's ``TrainingConfig`` says about outputs (the CLI's ``--output.*``).

    ``callbacks()`` and ``logger()`` write it all: ``samples/NNNN.png`` grids, the pipeline in
    ``output_dir``, a Hub push, TensorBoard logs in ``output_dir/logs``, and ``checkpoints/``:
    ``epochNNNN.ckpt`` and the ``last.ckpt`` that ``--ckpt_path last`` resumes (see
    :class:`ResumeCheckpoint` for Ctrl-C).

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
    """

    def __init__(
        self,
        output_dir: str = "ddpm-butterflies-128",
        save_image_epochs: int = 10,
        save_model_epochs: int = 30,
        eval_batch_size: int = 16,
        seed: int = 0,
        push_to_hub: bool = False,
        hub_model_id: str | None = None,
        hub_private_repo: bool = False,
        overwrite_output_dir: bool = False,
        use_ema: bool = False,
        ema_max_decay: float = 0.9999,
        sampler: str = "ddpm",
        num_inference_steps: int = 1000,
        checkpoint_every_n_epochs: int | None = None,
        throughput_window: int = 20,
        fid_every_n_epochs: int | None = None,
        fid_num_images: int = 1000,
        checkpoint_every_n_train_steps: int | None = None,
    ) -> None:
        check_sampler_name(sampler)
        minimums = {
            "save_image_epochs": (save_image_epochs, 1),
            "save_model_epochs": (save_model_epochs, 1),
            "eval_batch_size": (eval_batch_size, 1),
            "num_inference_steps": (num_inference_steps, 1),
            "checkpoint_every_n_epochs": (checkpoint_every_n_epochs, 1),
            "checkpoint_every_n_train_steps": (checkpoint_every_n_train_steps, 1),
            "fid_every_n_epochs": (fid_every_n_epochs, 1),
            "fid_num_images": (fid_num_images, 2),
            "throughput_window": (throughput_window, 2),
        }
        for name, (value, minimum) in minimums.items():
            if value is not None:  # None: the documented default or off, never 0
                check_at_least(name, value, minimum)
        self.output_dir = Path(output_dir)
        self.save_image_epochs = save_image_epochs
        self.save_model_epochs = save_model_epochs
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.push_to_hub = push_to_hub
        self.hub_model_id = hub_model_id
        self.hub_private_repo = hub_private_repo
        self.overwrite_output_dir = overwrite_output_dir
        self.use_ema = use_ema
        self.ema_max_decay = ema_max_decay
        self.sampler = sampler
        self.num_inference_steps = num_inference_steps
        self.checkpoint_every_n_epochs = checkpoint_every_n_epochs or save_model_epochs
        self.checkpoint_every_n_train_steps = checkpoint_every_n_train_steps
        self.throughput_window = throughput_window
        self.fid_every_n_epochs = fid_every_n_epochs
        self.fid_num_images = fid_num_images

    def callbacks(self) -> list[Callback]:
        """EMA (if on), grid, export, push (if on), checkpoints, LR and throughput monitors.

        The grid comes before the export so a push after the export carries the new grid.
        """
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
            ),
            PipelineExportCallback(output_dir, self.save_model_epochs, overwrite),
        ]
        if self.push_to_hub and self.hub_model_id:
            callbacks.append(PushToHubCallback(self.hub_model_id, self.hub_private_repo))
        elif self.push_to_hub:
            rank_zero_warn("push_to_hub is on but hub_model_id is not set: nothing will be pushed.")
        if self.fid_every_n_epochs:
            callbacks += [
                FIDCallback(every_n_epochs=self.fid_every_n_epochs, num_images=self.fid_num_images),
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
