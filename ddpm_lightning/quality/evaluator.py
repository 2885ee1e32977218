"""FID/KID of a module's samples against real images, without a Trainer."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics.utilities.distributed import gather_all_tensors

from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.quality.feature_extractors import (
    count_features,
    extract_features,
    feature_extractor_id,
)
from ddpm_lightning.quality.metrics import SampleQualityMetrics
from ddpm_lightning.quality.real_images import (
    RealImages,
    pixels_digest,
    real_batch,
    real_image_batches,
)
from ddpm_lightning.quality.statistics_cache import (
    CACHE_VERSION,
    DEFAULT_CACHE_DIR,
    RealStatisticsCache,
)
from ddpm_lightning.sampling import shard, to_uint8
from ddpm_lightning.sampling.generation import ImageGenerator
from ddpm_lightning.sampling.seeds import image_seeds


class SampleQualityEvaluator:
    """FID/KID of a module's samples against real images, for FIDCallback and evaluate_samplers.

    Real statistics are computed once (sharded over ranks) and cached; generation is sharded
    by seed.

    Args:
        feature_extractor: the network mapping uint8 (N, 3, H, W) images to features.
        feature_extractor_id: identifies the features in the cache key.
        cache_dir: where real statistics are cached (None: no cache).
        kid_subset_size: images per KID subset (None: the smaller of 100 and the image counts).
        sync_on_compute: gather metric states across ranks (True under DDP).
    """

    def __init__(
        self,
        feature_extractor: nn.Module,
        feature_extractor_id: str | None = None,
        cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR,
        kid_subsets: int = 100,
        kid_subset_size: int | None = None,
        kid_seed: int = 0,
        sync_on_compute: bool = True,
    ) -> None:
        self.extractor = feature_extractor
        self.extractor_id = feature_extractor_id
        self.cache_dir = cache_dir
        self._metric_settings = (kid_subsets, kid_subset_size, kid_seed, sync_on_compute)
        self.metrics: SampleQualityMetrics | None = None
        self.num_real = 0
        self.cache_file: Path | None = None

    @property
    def num_features(self) -> int:
        """The feature size (known after :meth:`prepare`)."""
        return self._require_metrics().num_features

    def prepare(
        self,
        real_images: RealImages,
        identity: dict[str, Any],
        device: torch.device | str = "cpu",
        max_real_images: int | None = None,
        batch_size: int = 64,
        rank: int = 0,
        world_size: int = 1,
        broadcast: Callable[[Any], Any] | None = None,
    ) -> bool:
        """Load or compute the real statistics; every rank calls this. True on a cache hit.

        ``identity`` is the dataset part of the cache key (see :func:`dataset_identity`);
        ``broadcast`` (the strategy's) sends rank 0's cache lookup to every rank.
        """
        device = torch.device(device)
        num_real = len(real_images)
        if max_real_images is not None:
            num_real = min(num_real, max_real_images)
        if num_real < 2:
            raise InvalidSettingError(f"FID needs at least 2 real images, got {num_real}.")
        self.extractor.to(device)
        image_shape = tuple(real_batch(real_images, [0]).shape[1:])
        num_features = count_features(self.extractor, image_shape, device)
        extractor_id = self.extractor_id or feature_extractor_id(self.extractor, num_features)
        self.metrics = SampleQualityMetrics(num_features, *self._metric_settings).to(device)
        self.num_real = num_real

        cache = RealStatisticsCache(self.cache_dir) if self.cache_dir is not None else None
        cached, key = None, {}
        if rank == 0 and cache is not None:
            key = {
                "version": CACHE_VERSION,
                "dataset": identity,
                "image_shape": list(image_shape),
                "num_real_images": num_real,
                "pixels_digest": pixels_digest(real_images, num_real),
                "feature_extractor": extractor_id,
            }
            self.cache_file = cache.path(key)
            cached = cache.load(key)
        hit = broadcast(cached is not None) if broadcast else cached is not None
        if hit:
            self.metrics.set_real(cached.to(device) if cached is not None else None)
            rank_zero_info(f"FID/KID: real statistics of {num_real} images from {self.cache_file}.")
            return True

        my_share = shard(num_real, rank, world_size)
        local = self._features(real_image_batches(real_images, my_share, batch_size))
        features = torch.cat(gather_all_tensors(local.contiguous())) if world_size > 1 else local
        self.metrics.set_real(features if rank == 0 else None)
        if rank == 0 and cache is not None and cache.save(key, features) is not None:
            rank_zero_info(
                f"FID/KID: real statistics of {num_real} images cached in {self.cache_file}."
            )
        return False

    def score(self, fake_batches: Iterable[Tensor], num_images: int) -> dict[str, float]:
        """FID/KID of this rank's uint8 fake batches; ``num_images`` counts all ranks' images."""
        return self._score_features(self._features(fake_batches), num_images)

    def _score_features(self, features: Tensor, num_images: int) -> dict[str, float]:
        metrics = self._require_metrics()
        metrics.add_fake(features)
        return metrics.compute(self.num_real, num_images)

    def evaluate(
        self, generator: ImageGenerator, num_images: int, seed: int = 0
    ) -> dict[str, float]:
        """Generate images ``seed .. seed + num_images - 1`` (split over ranks) and score them.

        Each image depends only on its seed, so the value does not depend on the batch size
        or on how the seeds are split across ranks. Every rank must call this.
        """
        # Only the features, not the images, are kept; the empty start covers a rank without seeds.
        features = [self._features([])]
        generator.on_all_ranks(
            image_seeds(seed, num_images),
            on_batch=lambda images: features.append(self._features([to_uint8(images)])),
            gather=False,
        )
        return self._score_features(torch.cat(features), num_images)

    def _features(self, batches: Iterable[Tensor]) -> Tensor:
        device = self._require_metrics().fid.device
        features = [extract_features(self.extractor, batch.to(device)) for batch in batches]
        return torch.cat(features) if features else torch.empty(0, self.num_features, device=device)

    def _require_metrics(self) -> SampleQualityMetrics:
        if self.metrics is None:
            raise RuntimeError("Call prepare() with the real images first.")
        return self.metrics
