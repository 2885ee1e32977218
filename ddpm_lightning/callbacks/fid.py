"""The callback that logs FID and KID of generated samples during training."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.private_apis import val_check_time_interval
from ddpm_lightning.quality import (
    FIDSettings,
    SampleQualityEvaluator,
    build_feature_extractor,
    dataset_identity,
)

#: For values already global: "max" changes nothing but silences Lightning's unsynced warning.
_GLOBAL_VALUE = dict(on_step=False, on_epoch=True, sync_dist=True, reduce_fx="max")


class FIDCallback(Callback):
    """Logs FID and KID of generated samples every few epochs, for ModelCheckpoint to monitor.

    Samples the same seeds every time, split over ranks, with the EMA weights (if any) under
    the Trainer's precision; every rank logs ``{metric_prefix}fid``, ``...kid``, ``...kid_std``.
    Computed where ModelCheckpoint reads the metric (train epoch end, or the first validation
    end of a due epoch); with ``every_n_epochs > 1`` give ModelCheckpoint the same value.
    Real statistics come from the datamodule's ``train_dataset``. The default Inception-v3
    downloads its weights on first use; offline, set ``feature_extractor_weights_path``. A
    conditional model's images follow the training set's class proportions.

    Args:
        settings: every FID/KID setting (see :class:`~ddpm_lightning.quality.FIDSettings`).
        feature_extractor: a module mapping uint8 (N, 3, H, W) images to (N, num_features),
            instead of Inception-v3.
    """

    def __init__(
        self, settings: FIDSettings | None = None, feature_extractor: torch.nn.Module | None = None
    ) -> None:
        self.settings = settings or FIDSettings()
        self.feature_extractor = feature_extractor
        #: The last values computed, e.g. ``{"fid": ..., "kid": ..., "kid_std": ...}``.
        self.last_metrics: dict[str, float] = {}
        self._evaluator: SampleQualityEvaluator | None = None
        self._last_epoch: int | None = None
        self._last_step: int | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Build the feature extractor before training, so missing weights fail early."""
        if stage != "fit":
            return
        self._last_epoch = self._last_step = None
        settings = self.settings
        extractor = build_feature_extractor(
            self.feature_extractor, settings.feature, settings.feature_extractor_weights_path
        )
        self._evaluator = settings.evaluator(extractor)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Load or compute the real statistics (on every rank: it may gather)."""
        pl_module.image_generator(self.settings.sampling)  # a sampler it cannot use fails now
        evaluator = self._require_evaluator()
        datamodule = getattr(trainer, "datamodule", None)
        real_images = getattr(datamodule, "train_dataset", None)
        if real_images is None:
            raise RuntimeError(
                "FIDCallback takes its real images from the datamodule's train_dataset, but "
                "this fit has none: pass a datamodule such as ImageDataModule to Trainer.fit."
            )
        if getattr(datamodule, "streaming", False):
            raise InvalidSettingError(
                "FIDCallback needs the real images in the decoded cache, but the data is "
                "streamed: set data streaming to false for FID during training, or measure it "
                "after training with `ddpm-lightning evaluate`."
            )
        evaluator.prepare(
            real_images,
            dataset_identity(datamodule, self.settings.dataset_key),
            device=pl_module.device,
            max_real_images=self.settings.max_real_images,
            batch_size=self.settings.batch_size,
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            broadcast=trainer.strategy.broadcast,
        )

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Compute and log here unless ModelCheckpoint saves at validation end (see class)."""
        self._log_if_due(trainer, pl_module, at_val_end=False)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Compute and log at the first validation of a due epoch, when checkpoints wait for it."""
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._log_if_due(trainer, pl_module, at_val_end=True)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Optionally compute once more for the final weights, straight to the loggers."""
        if not self.settings.evaluate_at_train_end or self._last_step == trainer.global_step:
            return
        values = self._evaluate(trainer, pl_module)
        metrics = {self.settings.metric_prefix + name: value for name, value in values.items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Release the extractor and metric states (GPU memory) when fitting ends."""
        if stage == "fit":
            self._evaluator = None

    def _log_if_due(self, trainer: Trainer, pl_module: LightningModule, at_val_end: bool) -> None:
        """Evaluate where ModelCheckpoint reads, once in every ``every_n_epochs``-th epoch."""
        epoch = trainer.current_epoch
        due = (epoch + 1) % self.settings.every_n_epochs == 0 and self._last_epoch != epoch
        if not due or _checkpoints_at_validation_end(trainer) != at_val_end:
            return
        for name, value in self._evaluate(trainer, pl_module).items():
            pl_module.log(
                self.settings.metric_prefix + name, value, prog_bar=name == "fid", **_GLOBAL_VALUE
            )

    def _evaluate(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        settings = self.settings
        generator = pl_module.image_generator(
            settings.sampling, trainer, description=f"FID/KID, epoch {trainer.current_epoch}"
        )
        class_counts = getattr(trainer.datamodule, "class_counts", lambda: None)()
        values = self._require_evaluator().evaluate(generator, settings.num_images, class_counts)
        self._last_epoch, self._last_step = trainer.current_epoch, trainer.global_step
        self.last_metrics = values
        sampling = generator.settings
        rank_zero_info(
            f"Epoch {trainer.current_epoch}: FID {values['fid']:.4f}, KID {values['kid']:.5f} "
            f"± {values['kid_std']:.5f} ({settings.num_images} images, {sampling.sampler}, "
            f"{sampling.num_inference_steps} steps)"
        )
        return values

    def _require_evaluator(self) -> SampleQualityEvaluator:
        if self._evaluator is None:
            raise RuntimeError("FIDCallback is only set up by Trainer.fit.")
        return self._evaluator


def _checkpoints_at_validation_end(trainer: Trainer) -> bool:
    """Whether ModelCheckpoint saves at validation end: its own rule (Lightning 2.6)."""
    num_val_batches = trainer.num_val_batches
    if isinstance(num_val_batches, list):
        num_val_batches = sum(num_val_batches)
    if not getattr(trainer, "enable_validation", True) or not num_val_batches:
        return False
    if val_check_time_interval(trainer) is not None:
        return True
    return trainer.check_val_every_n_epoch != 1 or trainer.val_check_interval != 1.0
