"""FID/KID settings, defined once: the callback, the CLI's --output.fid.* and ``evaluate``."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ddpm_lightning.quality.evaluator import (
    DEFAULT_CACHE_DIR,
    SampleQualityEvaluator,
    check_num_images,
)
from ddpm_lightning.quality.feature_extractors import InceptionFeature, check_inception_feature
from ddpm_lightning.sampling import SamplingSettings
from ddpm_lightning.utils.checks import check_at_least


def _fid_sampling() -> SamplingSettings:
    return SamplingSettings("dpm-solver++", num_inference_steps=20, batch_size=64)


@dataclass
class FIDSettings:
    """How FID and KID are measured.

    Args:
        every_n_epochs: during training, FID and KID every N epochs.
        num_images: images generated per evaluation (over all ranks; at least 2).
        sampling: how they are generated (``batch_size`` also batches the feature extractor;
            ``seed`` also seeds KID's subset draws).
        feature: Inception layer (64, 192, 768 or 2048) when no extractor module is given.
        feature_extractor_weights_path: a local Inception weights file (offline).
        feature_extractor_key: names the extractor in the cache key (default: class and size).
        max_real_images: use only the first this many training images as the real set.
        dataset_key: names the dataset in the cache key instead of its name and folder.
        cache_dir: where real statistics are cached; None recomputes them every run.
        kid_subset_size: images per KID subset (default: the smaller of 100 and the image counts).
        kid_subsets: KID subsets drawn.
        evaluate_at_train_end: also compute when training ends (straight to the loggers).
        metric_prefix: the logged names' prefix (``val/fid``, ``val/kid``, ``val/kid_std``).
    """

    every_n_epochs: int = 1
    num_images: int = 1000
    sampling: SamplingSettings = field(default_factory=_fid_sampling)
    feature: InceptionFeature = 2048
    feature_extractor_weights_path: str | None = None
    feature_extractor_key: str | None = None
    max_real_images: int | None = None
    dataset_key: str | None = None
    cache_dir: str | None = DEFAULT_CACHE_DIR
    kid_subset_size: int | None = None
    kid_subsets: int = 100
    evaluate_at_train_end: bool = False
    metric_prefix: str = "val/"

    def __post_init__(self) -> None:
        """Check every count before any work."""
        check_at_least("every_n_epochs", self.every_n_epochs, 1)
        check_num_images(self.num_images)
        check_inception_feature(self.feature)
        if self.kid_subset_size is not None:
            check_at_least("kid_subset_size", self.kid_subset_size, 2)

    @property
    def batch_size(self) -> int:
        """Images per generation and feature-extractor batch on each rank."""
        return self.sampling.batch_size or 64

    def evaluator(
        self, extractor: nn.Module, sync_on_compute: bool = True
    ) -> SampleQualityEvaluator:
        """The evaluator these settings describe (``sync_on_compute``: gather over DDP ranks)."""
        return SampleQualityEvaluator(
            extractor,
            feature_extractor_id=self.feature_extractor_key,
            cache_dir=self.cache_dir,
            kid_subsets=self.kid_subsets,
            kid_subset_size=self.kid_subset_size,
            kid_seed=self.sampling.seed,
            sync_on_compute=sync_on_compute,
        )
