"""The callback that logs FID and KID of generated samples during training."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.models.ddpm_module import SamplerName
from ddpm_lightning.private_apis import val_check_time_interval
from ddpm_lightning.quality import (
    DEFAULT_CACHE_DIR,
    InceptionFeature,
    SampleQualityEvaluator,
    build_feature_extractor,
    dataset_identity,
)
from ddpm_lightning.quality.evaluator import check_num_images
from ddpm_lightning.quality.feature_extractors import check_inception_feature
from ddpm_lightning.sampling import check_sampler_name
from ddpm_lightning.sampling.generation import ImageGenerator
from ddpm_lightning.utils.checks import check_at_least

#: For values already global: "max" changes nothing but silences Lightning's unsynced warning.
_GLOBAL_VALUE = dict(on_step=False, on_epoch=True, sync_dist=True, reduce_fx="max")


class FIDCallback(Callback):
    """Logs FID and KID of generated samples every few epochs, for ModelCheckpoint to monitor.

    Samples the same seeds every time, split over ranks, with the EMA weights (if any) under
    the Trainer's precision; every rank logs ``{metric_prefix}fid``, ``...kid``, ``...kid_std``.
    Computed where ModelCheckpoint reads the metric (train epoch end, or the first validation
    end of a due epoch); with ``every_n_epochs > 1`` give ModelCheckpoint the same value.
    Real statistics come from the datamodule's ``train_dataset``. The default Inception-v3
    downloads its weights on first use; offline, pass ``feature_extractor_weights_path``.

    Args:
        num_images: images generated per evaluation (over all ranks; at least 2).
        seed: the first image's seed; also seeds KID's subset draws.
        batch_size: images per generation and extractor batch on each rank.
        feature: Inception layer (64, 192, 768 or 2048) when no feature_extractor is given.
        feature_extractor: a module mapping uint8 (N, 3, H, W) images to (N, num_features).
        feature_extractor_key: names the extractor in the cache key (default: class and size).
        max_real_images: use only the first this many training images as the real set.
        dataset_key: names the dataset in the cache key instead of its name and folder.
        cache_dir: where real statistics are cached; None recomputes them every run.
        kid_subset_size: images per KID subset (default: the smaller of 100 and the image counts).
        evaluate_at_train_end: also compute when training ends (straight to the loggers).
        guidance_scale: classifier-free guidance of a conditional model's images, whose classes
            follow the training set's class proportions.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_images: int = 1000,
        sampler: SamplerName = "dpm-solver++",
        num_inference_steps: int = 20,
        seed: int = 0,
        batch_size: int = 64,
        feature: InceptionFeature = 2048,
        feature_extractor: torch.nn.Module | None = None,
        feature_extractor_weights_path: str | None = None,
        feature_extractor_key: str | None = None,
        max_real_images: int | None = None,
        dataset_key: str | None = None,
        cache_dir: str | None = DEFAULT_CACHE_DIR,
        kid_subset_size: int | None = None,
        kid_subsets: int = 100,
        evaluate_at_train_end: bool = False,
        metric_prefix: str = "val/",
        guidance_scale: float = 1.0,
    ) -> None:
        check_at_least("every_n_epochs", every_n_epochs, 1)
        check_num_images(num_images)
        check_at_least("batch_size", batch_size, 1)
        check_sampler_name(sampler)
        if feature_extractor is None:
            check_inception_feature(feature)
        if kid_subset_size is not None:
            check_at_least("kid_subset_size", kid_subset_size, 2)
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.sampler = sampler
        self.num_inference_steps = num_inference_steps
        self.seed = seed
        self.batch_size = batch_size
        self.feature = feature
        self.feature_extractor = feature_extractor
        self.feature_extractor_weights_path = feature_extractor_weights_path
        self.feature_extractor_key = feature_extractor_key
        self.max_real_images = max_real_images
        self.dataset_key = dataset_key
        self.cache_dir = cache_dir
        self.kid_subset_size = kid_subset_size
        self.kid_subsets = kid_subsets
        self.evaluate_at_train_end = evaluate_at_train_end
        self.metric_prefix = metric_prefix
        self.guidance_scale = guidance_scale
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
        extractor = build_feature_extractor(
            self.feature_extractor, self.feature, self.feature_extractor_weights_path
        )
        key = self.feature_extractor_key  # None: the class and size (and Inception's weights)
        self._evaluator = SampleQualityEvaluator(
            extractor, key, self.cache_dir, self.kid_subsets, self.kid_subset_size, self.seed
        )

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Load or compute the real statistics (on every rank: it may gather)."""
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
            dataset_identity(datamodule, self.dataset_key),
            device=pl_module.device,
            max_real_images=self.max_real_images,
            batch_size=self.batch_size,
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
        if not self.evaluate_at_train_end or self._last_step == trainer.global_step:
            return
        values = self._evaluate(trainer, pl_module)
        metrics = {self.metric_prefix + name: value for name, value in values.items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Release the extractor and metric states (GPU memory) when fitting ends."""
        if stage == "fit":
            self._evaluator = None

    def _log_if_due(self, trainer: Trainer, pl_module: LightningModule, at_val_end: bool) -> None:
        """Evaluate where ModelCheckpoint reads, once in every ``every_n_epochs``-th epoch."""
        epoch = trainer.current_epoch
        due = (epoch + 1) % self.every_n_epochs == 0 and self._last_epoch != epoch
        if not due or _checkpoints_at_validation_end(trainer) != at_val_end:
            return
        for name, value in self._evaluate(trainer, pl_module).items():
            pl_module.log(self.metric_prefix + name, value, prog_bar=name == "fid", **_GLOBAL_VALUE)

    def _evaluate(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        generator = ImageGenerator(
            pl_module,
            self.sampler,
            self.num_inference_steps,
            self.batch_size,
            trainer=trainer,
            description=f"FID/KID, epoch {trainer.current_epoch}",
            guidance_scale=self.guidance_scale,
        )
        class_counts = getattr(trainer.datamodule, "class_counts", lambda: None)()
        evaluator = self._require_evaluator()
        values = evaluator.evaluate(generator, self.num_images, self.seed, class_counts)
        self._last_epoch, self._last_step = trainer.current_epoch, trainer.global_step
        self.last_metrics = values
        rank_zero_info(
            f"Epoch {trainer.current_epoch}: FID {values['fid']:.4f}, KID {values['kid']:.5f} "
            f"± {values['kid_std']:.5f} ({self.num_images} images, {self.sampler}, "
            f"{self.num_inference_steps} steps)"
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
