"""FID/KID of a module's samples against real images (cached), without a Trainer."""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.utilities.distributed import gather_all_tensors

from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.quality.feature_extractors import (
    count_features,
    extract_features,
    feature_extractor_id,
)
from ddpm_lightning.quality.real_images import (
    RealImages,
    pixels_digest,
    real_batch,
    real_image_batches,
)
from ddpm_lightning.sampling import ImageGenerator, shard
from ddpm_lightning.sampling.seeds import image_seeds, labels_in_proportion
from ddpm_lightning.utils.atomic_files import write_atomically
from ddpm_lightning.utils.checks import check_at_least
from ddpm_lightning.utils.images import to_uint8

#: Where real-image statistics are kept between runs (``None`` disables the cache).
DEFAULT_CACHE_DIR = "~/.cache/ddpm_lightning/fid"
#: Bumped whenever what a cache file holds changes (2: the real features themselves).
CACHE_VERSION = 2


class RealStatisticsCache:
    """The file of one key in ``cache_dir``; the key is stored inside and checked on load."""

    def __init__(self, cache_dir: str | os.PathLike, key: dict[str, Any]) -> None:
        self.key = json.dumps({"version": CACHE_VERSION, **key}, sort_keys=True)
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:16]
        dataset = str(key["dataset"].get("dataset", "data"))
        dataset = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset)[-40:]
        channels, size = key["image_shape"][0], key["image_shape"][-1]
        name = f"{dataset}-{size}px-{channels}ch-{key['num_real_images']}-{digest}.pt"
        self.path = Path(cache_dir).expanduser() / name

    def load(self) -> torch.Tensor | None:
        """The cached real features, or None (missing, unreadable or another key's)."""
        if not self.path.is_file():
            return None
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # a truncated or foreign file: recompute rather than fail
            rank_zero_warn(f"Ignoring the unreadable FID statistics cache {self.path}: {error}")
            return None
        return payload["real_features"] if payload.get("key") == self.key else None

    def save(self, features: torch.Tensor) -> Path | None:
        """Store ``features`` atomically; a read-only or full disk only costs a warning."""
        payload = {"key": self.key, "real_features": features.cpu()}
        try:
            return write_atomically(self.path, lambda file: torch.save(payload, file))
        except OSError as error:
            rank_zero_warn(f"Could not cache the real FID statistics in {self.path}: {error}")
            return None


#: KID subset size: well below the usual 1000+ images, so subsets differ and the std tells.
DEFAULT_KID_SUBSET_SIZE = 100

Metrics = tuple[FrechetInceptionDistance, KernelInceptionDistance]


def check_num_images(num_images: int) -> None:
    """Raise unless ``num_images`` is at least the 2 generated images FID needs."""
    if num_images < 2:
        message = f"FID needs at least 2 generated images, got num_images={num_images}."
        raise InvalidSettingError(message)


@dataclass(eq=False)
class SampleQualityEvaluator:
    """FID/KID of a module's samples against real images, for FIDCallback and evaluate_samplers.

    Real features are extracted once (sharded over ranks) and cached in ``cache_dir`` under
    ``feature_extractor_id``; FID and KID share them. With ``sync_on_compute`` (DDP) the metric
    states are gathered. ``kid_seed`` seeds KID's subset draws in a forked RNG.
    """

    feature_extractor: nn.Module
    feature_extractor_id: str | None = None
    cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR
    kid_subsets: int = 100
    kid_subset_size: int | None = None
    kid_seed: int = 0
    sync_on_compute: bool = True
    metrics: Metrics | None = field(default=None, init=False)
    num_real: int = field(default=0, init=False)
    num_features: int = field(default=0, init=False)  # known after prepare()
    cache_file: Path | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.kid_subset_size is not None:
            check_at_least("kid_subset_size", self.kid_subset_size, 2)

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
        """Load or compute real statistics on all ranks (``identity`` keys the cache); True: hit."""
        num_real = len(real_images)
        if max_real_images is not None:
            num_real = min(num_real, max_real_images)
        if num_real < 2:
            raise InvalidSettingError(f"FID needs at least 2 real images, got {num_real}.")
        self.feature_extractor.to(device)
        image_shape = tuple(real_batch(real_images, [0]).shape[1:])
        num_features = count_features(self.feature_extractor, image_shape, torch.device(device))
        self.metrics = self._build_metrics(num_features, device)
        self.num_real, self.num_features = num_real, num_features

        cache = cached = None
        if rank == 0 and self.cache_dir is not None:
            key = {
                "dataset": identity,
                "image_shape": list(image_shape),
                "num_real_images": num_real,
                "pixels_digest": pixels_digest(real_images, num_real),
                "feature_extractor": self.feature_extractor_id
                or feature_extractor_id(self.feature_extractor, num_features),
            }
            cache = RealStatisticsCache(self.cache_dir, key)
            self.cache_file = cache.path
            cached = cache.load()
        hit = broadcast(cached is not None) if broadcast else cached is not None
        if hit:
            features = cached.to(device) if cached is not None else None
            rank_zero_info(f"FID/KID: real statistics of {num_real} images from {self.cache_file}.")
        else:
            my_share = shard(num_real, rank, world_size)
            features = self._features(real_image_batches(real_images, my_share, batch_size))
            if world_size > 1:
                features = torch.cat(gather_all_tensors(features.contiguous()))
        if not hit and cache is not None and cache.save(features) is not None:
            rank_zero_info(f"FID/KID: real statistics of {num_real} images cached in {cache.path}.")
        for metric in self.metrics:  # real statistics on rank 0 only: the ranks' states add up
            metric.update(features if rank == 0 else self._features([]), real=True)
        return hit

    def _build_metrics(self, num_features: int, device: torch.device | str) -> Metrics:
        """FID and KID on ``device`` taking features as they are: the extractor runs once."""
        passthrough = nn.Identity()
        passthrough.num_features = num_features
        shared = dict(reset_real_features=False, sync_on_compute=self.sync_on_compute)
        fid = FrechetInceptionDistance(passthrough, **shared).to(device)
        with warnings.catch_warnings():  # the features are small here; the warning is noise
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            kid = KernelInceptionDistance(passthrough, self.kid_subsets, **shared)
        return fid, kid.to(device)

    def score(self, fake_batches: Iterable[Tensor], num_images: int) -> dict[str, float]:
        """FID/KID of this rank's uint8 fake batches; ``num_images`` counts all ranks' images."""
        return self._score_features(self._features(fake_batches), num_images)

    def _score_features(self, features: Tensor, num_images: int) -> dict[str, float]:
        """FID, KID mean and KID std over all ranks; then forget the generated features."""
        fid, kid = self._require_metrics()
        fid.update(features, real=False)
        kid.update(features, real=False)  # in one call: KID gathers lists pairwise
        wanted = self.kid_subset_size or DEFAULT_KID_SUBSET_SIZE
        kid.subset_size = min(wanted, self.num_real, num_images)
        if self.kid_subset_size and kid.subset_size < self.kid_subset_size:
            rank_zero_warn(
                f"kid_subset_size={self.kid_subset_size} is more than the {self.num_real} real "
                f"or {num_images} generated images; using {kid.subset_size}."
            )
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.kid_seed)
                fid_value = fid.compute()
                kid_mean, kid_std = kid.compute()
        finally:
            fid.reset()
            kid.reset()
        return {"fid": float(fid_value), "kid": float(kid_mean), "kid_std": float(kid_std)}

    def evaluate(
        self,
        generator: ImageGenerator,
        num_images: int,
        class_counts: Sequence[int] | None = None,
    ) -> dict[str, float]:
        """Score images ``seed ..`` (the generator's settings; one per seed: any batches, ranks).

        A conditional model's images get classes in the proportions of ``class_counts`` (the
        training set's), or evenly spread without them.
        """
        labels, classes = None, generator.classes
        if classes.conditional:
            weights = class_counts or [1] * classes.null_class
            labels = labels_in_proportion(weights, num_images)
        features = [self._features([])]  # the empty start covers a rank without seeds
        generator.on_all_ranks(
            image_seeds(generator.settings.seed, num_images),
            on_batch=lambda images: features.append(self._features([to_uint8(images)])),
            gather=False,
            class_labels=labels,
        )
        return self._score_features(torch.cat(features), num_images)

    def _features(self, batches: Iterable[Tensor]) -> Tensor:
        device = self._require_metrics()[0].device
        features = [extract_features(self.feature_extractor, batch.to(device)) for batch in batches]
        return torch.cat(features) if features else torch.empty(0, self.num_features, device=device)

    def _require_metrics(self) -> Metrics:
        if self.metrics is None:
            raise RuntimeError("Call prepare() with the real images first.")
        return self.metrics
