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
    INCEPTION_FEATURES,
    InceptionFeature,
    SampleQualityEvaluator,
    build_feature_extractor,
    dataset_identity,
    feature_extractor_id,
)
from ddpm_lightning.sampling import check_sampler_name
from ddpm_lightning.sampling.generation import ImageGenerator


class FIDCallback(Callback):
    """Logs FID and KID of generated samples every few epochs, for ModelCheckpoint to monitor.

    The same seeds ``seed, seed + 1, ...`` every time, so values compare across epochs; split
    into contiguous blocks over ranks; sampled with the EMA weights when an EMA callback is
    present and under the Trainer's precision. torchmetrics' ``FrechetInceptionDistance`` and
    ``KernelInceptionDistance`` gather their states across ranks, so every rank logs the
    one-process value: ``{metric_prefix}fid``, ``...kid`` (mean) and ``...kid_std``.

    When: ``ModelCheckpoint`` reads the metric when it saves, by default at the end of the
    training epoch, or at the end of validation when validation runs other than once at the
    end of every epoch (``check_val_every_n_epoch != 1``, a fractional or time-based
    ``val_check_interval``). This callback computes at the same point: ``on_train_epoch_end``
    (Lightning calls monitoring callbacks after the others there), or else at the first
    validation end of a due epoch (never in the sanity check); then let validation run in the
    epochs FID is due. With ``every_n_epochs > 1``, give ModelCheckpoint the same
    ``every_n_epochs``, or it warns (or fails, after validation) on the epochs without FID.

    Real statistics come from the datamodule's ``train_dataset`` and are cached in
    ``cache_dir``, keyed by dataset (``dataset_key``, or name and folder), split, image shape,
    number of real images, a hash of the first images and the feature extractor. Only rank 0
    reads and writes the cache and holds the real statistics (summing them over ranks would
    count them twice); a miss is computed sharded over ranks.

    The extractor sees uint8 (N, 3, H, W) images (grayscale repeated to RGB, as Inception
    wants). The default, torchmetrics' Inception-v3 at ``feature=2048`` (standard FID),
    downloads its weights on first use; offline, pass ``feature_extractor_weights_path`` or any
    ``feature_extractor`` module (``class_path``/``init_args`` in YAML).

    Args:
        every_n_epochs: compute after every n-th epoch.
        num_images: images generated per evaluation (over all ranks; at least 2).
        sampler: ``ddpm``, ``ddim``, ``dpm-solver++`` or ``unipc``.
        num_inference_steps: sampler steps.
        seed: the first image's seed; also seeds KID's subset draws.
        batch_size: images per generation and extractor batch on each rank.
        feature: Inception layer (64, 192, 768 or 2048) when no feature_extractor is given.
        feature_extractor: a module mapping uint8 (N, 3, H, W) images to (N, d) features, with a
            ``num_features`` attribute (else one probe batch finds d).
        feature_extractor_weights_path: a local file of torch-fidelity's Inception weights.
        feature_extractor_key: names the extractor in the cache key (default: class and size;
            set it when two extractors of one class differ in weights).
        max_real_images: use only the first this many training images as the real set.
        dataset_key: names the dataset in the cache key instead of its name and folder.
        cache_dir: where real statistics are cached; None recomputes them every run.
        kid_subset_size: images per KID subset (default: the smaller of 100, ``num_images``
            and the number of real images).
        kid_subsets: KID subsets averaged.
        evaluate_at_train_end: also compute when training ends (sent to the loggers directly,
            since ``self.log`` is not allowed in ``on_train_end``), unless just computed.
        metric_prefix: prefix of the logged names.
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
    ) -> None:
        if every_n_epochs < 1:
            raise InvalidSettingError(f"every_n_epochs must be at least 1, got {every_n_epochs}.")
        if num_images < 2:
            raise InvalidSettingError(
                f"FID needs at least 2 generated images, got num_images={num_images}."
            )
        if batch_size < 1:
            raise InvalidSettingError(f"batch_size must be at least 1, got {batch_size}.")
        if feature_extractor is None and feature not in INCEPTION_FEATURES:
            raise InvalidSettingError(
                f"feature must be one of {INCEPTION_FEATURES}, got {feature}."
            )
        if kid_subset_size is not None and kid_subset_size < 2:
            raise InvalidSettingError(f"kid_subset_size must be at least 2, got {kid_subset_size}.")
        check_sampler_name(sampler)
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
        #: The last values computed, e.g. ``{"fid": ..., "kid": ..., "kid_std": ...}``.
        self.last_metrics: dict[str, float] = {}
        self._evaluator: SampleQualityEvaluator | None = None
        self._last_epoch: int | None = None
        self._last_step: int | None = None

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Build the feature extractor before training, so missing weights fail early."""
        if stage != "fit":
            return
        self._last_epoch = self._last_step = None
        extractor = build_feature_extractor(
            self.feature_extractor, self.feature, self.feature_extractor_weights_path
        )
        key = self.feature_extractor_key
        if key is None and self.feature_extractor is None:
            key = feature_extractor_id(extractor, self.feature, self.feature_extractor_weights_path)
        self._evaluator = SampleQualityEvaluator(
            extractor,
            feature_extractor_id=key,
            cache_dir=self.cache_dir,
            kid_subsets=self.kid_subsets,
            kid_subset_size=self.kid_subset_size,
            kid_seed=self.seed,
            sync_on_compute=True,
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
        if not _checkpoints_at_validation_end(trainer) and self._due(trainer):
            self._log(pl_module, self._evaluate(trainer, pl_module))

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Compute and log at the first validation of a due epoch, when checkpoints wait for it."""
        if (
            self._evaluator is not None
            and not trainer.sanity_checking
            and trainer.state.fn == "fit"
            and _checkpoints_at_validation_end(trainer)
            and self._due(trainer)
        ):
            self._log(pl_module, self._evaluate(trainer, pl_module))

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

    # ------------------------------------------------------------------ helpers
    def _due(self, trainer: Trainer) -> bool:
        return (
            trainer.current_epoch + 1
        ) % self.every_n_epochs == 0 and self._last_epoch != trainer.current_epoch

    def _evaluate(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        generator = ImageGenerator(
            pl_module,
            self.sampler,
            self.num_inference_steps,
            self.batch_size,
            trainer=trainer,
            description=f"FID/KID, epoch {trainer.current_epoch}",
        )
        values = self._require_evaluator().evaluate(generator, self.num_images, self.seed)
        self._last_epoch, self._last_step = trainer.current_epoch, trainer.global_step
        self.last_metrics = values
        rank_zero_info(
            f"Epoch {trainer.current_epoch}: FID {values['fid']:.4f}, KID {values['kid']:.5f} "
            f"± {values['kid_std']:.5f} ({self.num_images} images, {self.sampler}, "
            f"{self.num_inference_steps} steps)"
        )
        return values

    def _log(self, pl_module: LightningModule, values: dict[str, float]) -> None:
        # The values are already global and equal on every rank. sync_dist with "max" cannot
        # change them; it only keeps Lightning from warning about unsynced epoch-level logs.
        for name, value in values.items():
            pl_module.log(
                self.metric_prefix + name,
                value,
                on_step=False,
                on_epoch=True,
                sync_dist=True,
                reduce_fx="max",
                rank_zero_only=False,
                prog_bar=name == "fid",
            )

    def _require_evaluator(self) -> SampleQualityEvaluator:
        if self._evaluator is None:
            raise RuntimeError("FIDCallback is only set up by Trainer.fit.")
        return self._evaluator


def _checkpoints_at_validation_end(trainer: Trainer) -> bool:
    """Whether ModelCheckpoint (by default) saves at validation end rather than train epoch end.

    Mirrors ``ModelCheckpoint._should_save_on_train_epoch_end`` of Lightning 2.6, for a run
    that validates at all.
    """
    num_val_batches = trainer.num_val_batches
    if isinstance(num_val_batches, list):
        num_val_batches = sum(num_val_batches)
    if not getattr(trainer, "enable_validation", True) or not num_val_batches:
        return False
    if val_check_time_interval(trainer) is not None:
        return True
    return trainer.check_val_every_n_epoch != 1 or trainer.val_check_interval != 1.0
