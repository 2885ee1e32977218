"""FID and KID of generated samples during training, against real statistics cached on disk."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.utilities.data import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors
from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

from ddpm_lightning.callbacks.ema import averaged_weights
from ddpm_lightning.models.ddpm_module import SamplerName
from ddpm_lightning.sampling import check_sampler_name, to_uint8

#: Where real-image statistics are kept between runs (``None`` disables the cache).
DEFAULT_CACHE_DIR = "~/.cache/ddpm_lightning/fid"
#: The Inception-v3 layers torchmetrics offers, by feature size.
InceptionFeature = Literal[64, 192, 768, 2048]
INCEPTION_FEATURES = get_args(InceptionFeature)
#: KID subset size when enough images exist: small enough next to the usual 1000 to 10000
#: images that the subsets differ and KID's std means something (torch-fidelity uses 1000).
DEFAULT_KID_SUBSET_SIZE = 100
#: Real images hashed into the cache key, to notice a changed dataset behind the same name.
_DIGEST_IMAGES = 64
_CACHE_VERSION = 1
_FID_REAL_STATES = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")

#: Real images: uint8 (N, C, H, W), or a dataset of uint8 (C, H, W) tensors (``PixelDataset``).
RealImages = Tensor | Dataset


class FeatureExtractorUnavailableError(RuntimeError):
    """The FID/KID feature extractor (by default Inception-v3) could not be built."""


# ----------------------------------------------------------------------------- feature extractor
def inception_weights_url() -> str:
    """Where torch-fidelity downloads the Inception-v3 weights, for error messages."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
    except ImportError:
        return "torch-fidelity's release page (URL_INCEPTION_V3)"
    return URL_INCEPTION_V3


def build_feature_extractor(
    feature_extractor: nn.Module | None = None,
    feature: int = 2048,
    feature_extractor_weights_path: str | None = None,
) -> nn.Module:
    """The given module, or torchmetrics' Inception-v3 (the standard FID network) at ``feature``.

    Args:
        feature_extractor: any module mapping uint8 (N, 3, H, W) images to (N, d) features.
        feature: Inception layer when no module is given: 64, 192, 768 or 2048 (standard FID).
        feature_extractor_weights_path: a local copy of the Inception weights (no download).

    Raises:
        FeatureExtractorUnavailableError: the Inception weights could not be downloaded or read.
    """
    if feature_extractor is None:
        if feature not in INCEPTION_FEATURES:
            raise ValueError(f"feature must be one of {INCEPTION_FEATURES}, got {feature}.")
        feature_extractor = _load_inception(feature, feature_extractor_weights_path)
    return feature_extractor.eval().requires_grad_(False)


def _load_inception(feature: int, weights_path: str | None) -> nn.Module:
    if not _TORCH_FIDELITY_AVAILABLE:
        raise FeatureExtractorUnavailableError(
            "FID/KID with the default Inception-v3 needs torch-fidelity: "
            "pip install torch-fidelity (or pass your own feature_extractor)."
        )
    from torchmetrics.image.fid import NoTrainInceptionV3

    try:
        return NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=[str(feature)],
            feature_extractor_weights_path=weights_path,
        )
    except Exception as error:  # URLError, HTTPError, timeouts, torch.load errors: all "no weights"
        raise FeatureExtractorUnavailableError(
            _missing_weights_message(weights_path, error)
        ) from error


def _missing_weights_message(weights_path: str | None, error: Exception) -> str:
    url = inception_weights_url()
    checkpoints = os.path.join(torch.hub.get_dir(), "checkpoints")
    if weights_path is not None:
        return (
            f"Could not load the Inception-v3 weights for FID/KID from {weights_path!r} "
            f"({type(error).__name__}: {error}). feature_extractor_weights_path must be the "
            f"file torch-fidelity downloads from {url}."
        )
    return (
        f"Could not download the Inception-v3 weights for FID/KID ({type(error).__name__}: "
        f"{error}). They are fetched once from {url} into {checkpoints}. Without internet "
        "access, download that file on a machine that has it, then either copy it into "
        f"{checkpoints} or pass its path as feature_extractor_weights_path (in YAML: "
        "feature_extractor_weights_path: /path/to/" + url.rsplit("/", 1)[-1] + "). Or use "
        "another network: feature_extractor takes any torch.nn.Module that maps uint8 "
        "(N, 3, H, W) images to (N, d) features (give it a num_features attribute)."
    )


def feature_extractor_id(
    extractor: nn.Module, num_features: int, weights_path: str | None = None, key: str | None = None
) -> str:
    """What identifies the features in the cache key: a user ``key``, else class and size.

    Two modules of one class with different weights need different keys.
    """
    if key:
        return key
    kind = f"{type(extractor).__module__}.{type(extractor).__qualname__}/{num_features}"
    if hasattr(extractor, "features_list"):  # torch-fidelity's Inception: say which weights
        kind += "/" + os.path.basename(weights_path or inception_weights_url())
    return kind


def count_features(extractor: nn.Module, image_shape: tuple[int, ...], device: torch.device) -> int:
    """The feature size: ``num_features``, Inception's layer, or one probe forward pass."""
    num_features = getattr(extractor, "num_features", None)
    if isinstance(num_features, Tensor):
        num_features = int(num_features.item())
    if isinstance(num_features, int):
        return num_features
    features_list = getattr(extractor, "features_list", None)
    if features_list and str(features_list[0]).isdigit():
        return int(features_list[0])
    probe = torch.zeros((2, 3, *image_shape[-2:]), dtype=torch.uint8, device=device)
    return extract_features(extractor, probe).shape[1]


@torch.no_grad()
def extract_features(extractor: nn.Module, images: Tensor) -> Tensor:
    """Float32 (N, d) features of uint8 (N, C, H, W) images.

    Grayscale is repeated to three channels, since Inception (like most extractors) is an RGB
    network. Runs with autocast off: FID's covariances suffer from half-precision features.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise TypeError(
            f"Expected uint8 (N, C, H, W) images, got {images.dtype} of shape "
            f"{tuple(images.shape)}."
        )
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    with _autocast_off(images.device):
        features = extractor(images)
    return features.reshape(images.shape[0], -1).float()


def _autocast_off(device: torch.device) -> AbstractContextManager:
    try:
        return torch.autocast(device.type, enabled=False)
    except RuntimeError:  # a device type without autocast
        return contextlib.nullcontext()


# ----------------------------------------------------------------------------- real images
def real_image_batches(
    source: RealImages, indices: Iterable[int], batch_size: int
) -> Iterator[Tensor]:
    """Uint8 (B, C, H, W) batches of the real images at ``indices``."""
    indices = list(indices)
    for start in range(0, len(indices), batch_size):
        yield _real_batch(source, indices[start : start + batch_size])


def _real_batch(source: RealImages, indices: list[int]) -> Tensor:
    if isinstance(source, Tensor):
        batch = source[indices]
    else:
        getitems = getattr(source, "__getitems__", None)  # PixelDataset reads a batch at once
        batch = getitems(indices) if getitems is not None else [source[i] for i in indices]
        if not isinstance(batch, Tensor):
            batch = torch.stack(
                [item["images"] if isinstance(item, dict) else item for item in batch]
            )
    if batch.dtype != torch.uint8 or batch.dim() != 4:
        raise TypeError(
            "Real images for FID must be uint8 (C, H, W) tensors (as ImageDataModule's "
            f"train_dataset yields), got {batch.dtype} batches of shape {tuple(batch.shape)}."
        )
    return batch


def dataset_identity(datamodule: Any = None, dataset_key: str | None = None) -> dict[str, Any]:
    """The dataset part of the cache key: ``dataset_key`` or name and folder, split, cropping."""
    identity: dict[str, Any] = {}
    if dataset_key:
        identity["dataset"] = dataset_key
    elif datamodule is not None:
        identity["dataset"] = getattr(datamodule, "dataset_name", type(datamodule).__qualname__)
        data_dir = getattr(datamodule, "data_dir", None)
        if data_dir:
            identity["data_dir"] = os.path.abspath(data_dir)
    for name in ("split", "image_column", "center_crop"):
        value = getattr(datamodule, name, None)
        if value is not None:
            identity[name] = value
    val_fraction = getattr(datamodule, "val_fraction", 0) or 0
    if val_fraction > 0:  # the training images are what the seeded split leaves
        identity["val_fraction"] = val_fraction
        identity["split_seed"] = getattr(datamodule, "seed", None)
    return identity


def _pixels_digest(source: RealImages, num_images: int) -> str:
    batch = _real_batch(source, list(range(min(num_images, _DIGEST_IMAGES))))
    return hashlib.sha256(batch.contiguous().cpu().numpy().tobytes()).hexdigest()[:16]


# ----------------------------------------------------------------------------- the cache
def _cache_path(cache_dir: str | os.PathLike, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    dataset = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(key["dataset"].get("dataset", "data")))[-40:]
    channels, size = key["image_shape"][0], key["image_shape"][-1]
    name = f"{dataset}-{size}px-{channels}ch-{key['num_real_images']}-{digest}.pt"
    return Path(cache_dir).expanduser() / name


def _load_cache(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: recompute rather than fail
        rank_zero_warn(f"Ignoring the unreadable FID statistics cache {path}: {error}")
        return None
    if payload.get("key") != json.dumps(key, sort_keys=True):
        return None
    return payload


def _save_atomically(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(payload, file)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as error:  # a read-only or full disk costs a recomputation next run, no more
        rank_zero_warn(f"Could not cache the real FID statistics in {path}: {error}")


# ----------------------------------------------------------------------------- the metrics
class _Precomputed(nn.Module):
    """Hands features to torchmetrics as they are, so the extractor runs once for FID and KID."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


class SampleQualityMetrics:
    """torchmetrics' FID and KID fed with the same features, keeping real statistics on reset.

    Under DDP both metrics gather their states across ranks in ``compute``, so every rank must
    call :meth:`set_real` or :meth:`load_real_states` once and :meth:`add_fake` once before
    each :meth:`compute`; real statistics live on rank 0 only (other ranks add nothing), or the
    sum over ranks would count them once per rank.

    Args:
        num_features: the feature size.
        kid_subsets: KID subsets averaged.
        kid_subset_size: images per KID subset (default: the smaller of 100 and the number of
            real and of generated images).
        kid_seed: seeds KID's subset draws, in a forked RNG (the global RNG is left alone).
        sync_on_compute: gather states across ranks when computing (False for one process).
    """

    def __init__(
        self,
        num_features: int,
        kid_subsets: int = 100,
        kid_subset_size: int | None = None,
        kid_seed: int = 0,
        sync_on_compute: bool = True,
    ) -> None:
        if kid_subset_size is not None and kid_subset_size < 2:
            raise ValueError(f"kid_subset_size must be at least 2, got {kid_subset_size}.")
        self.num_features = num_features
        self.kid_subset_size = kid_subset_size
        self.kid_seed = kid_seed
        self.fid = FrechetInceptionDistance(
            feature=_Precomputed(num_features),
            reset_real_features=False,
            sync_on_compute=sync_on_compute,
        )
        with warnings.catch_warnings():  # the features are small here; the warning is noise
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            self.kid = KernelInceptionDistance(
                feature=_Precomputed(num_features),
                subsets=kid_subsets,
                subset_size=kid_subset_size or DEFAULT_KID_SUBSET_SIZE,
                reset_real_features=False,
                sync_on_compute=sync_on_compute,
            )

    def to(self, device: torch.device | str) -> SampleQualityMetrics:
        """Move the states (NCCL gathers need them on the GPU)."""
        self.fid.to(device)
        self.kid.to(device)
        return self

    def set_real(self, features: Tensor | None) -> None:
        """Real statistics from all real features (None on ranks other than 0)."""
        if features is None:
            features = torch.empty(0, self.num_features, device=self.fid.device)
        self.fid.update(features, real=True)
        self.kid.update(features, real=True)

    def real_states(self) -> dict[str, Any]:
        """What restores the real side: FID's sums and KID's feature list, by torchmetrics name."""
        return {
            "fid": {name: getattr(self.fid, name).cpu() for name in _FID_REAL_STATES},
            "kid": {"real_features": dim_zero_cat(self.kid.real_features).cpu()},
        }

    def load_real_states(self, states: dict[str, Any] | None) -> None:
        """Restore :meth:`real_states` (None on ranks other than 0)."""
        if states is None:
            self.set_real(None)
            return
        for name in _FID_REAL_STATES:
            current = getattr(self.fid, name)
            setattr(self.fid, name, states["fid"][name].to(current.device, current.dtype))
        self.kid.real_features = [states["kid"]["real_features"].to(self.kid.device)]

    def add_fake(self, features: Tensor) -> None:
        """All of this rank's generated features in one call (KID gathers lists pairwise)."""
        self.fid.update(features, real=False)
        self.kid.update(features, real=False)

    def compute(self, num_real: int, num_fake: int) -> dict[str, float]:
        """FID, KID mean and KID std over all ranks; then forget the generated features."""
        wanted = self.kid_subset_size or DEFAULT_KID_SUBSET_SIZE
        self.kid.subset_size = min(wanted, num_real, num_fake)
        if self.kid_subset_size and self.kid.subset_size < self.kid_subset_size:
            rank_zero_warn(
                f"kid_subset_size={self.kid_subset_size} is more than the {num_real} real or "
                f"{num_fake} generated images; using {self.kid.subset_size}."
            )
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.kid_seed)
                fid = self.fid.compute()
                kid_mean, kid_std = self.kid.compute()
        finally:
            self.fid.reset()
            self.kid.reset()
        return {"fid": float(fid), "kid": float(kid_mean), "kid_std": float(kid_std)}


# ----------------------------------------------------------------------------- distribution
def shard(num_items: int, rank: int, world_size: int) -> range:
    """The contiguous block of ``range(num_items)`` that ``rank`` handles.

    Contiguous, so the gathered features (rank 0's block, then rank 1's, ...) are in the same
    order as in one process: KID's subset draws, and so its value, then match too.
    """
    per_rank, extra = divmod(num_items, world_size)
    start = rank * per_rank + min(rank, extra)
    return range(start, start + per_rank + (rank < extra))


def _gather_rows(features: Tensor, world_size: int) -> Tensor:
    if world_size == 1:
        return features
    return torch.cat(gather_all_tensors(features.contiguous()))


def _identity(value: Any) -> Any:
    return value


# ----------------------------------------------------------------------------- the evaluator
class SampleQualityEvaluator:
    """FID/KID of a module's samples against real images: the work behind :class:`FIDCallback`.

    Trainer-free, so :func:`ddpm_lightning.evaluation.evaluate_samplers` uses it too. Real
    statistics are computed once (sharded over ranks) and cached; generation is sharded by seed.

    Args:
        feature_extractor: the network mapping uint8 (N, 3, H, W) images to features.
        feature_extractor_id: identifies the features in the cache key.
        cache_dir: where real statistics are cached (None: no cache).
        kid_subsets: KID subsets averaged.
        kid_subset_size: images per KID subset (None: the smaller of 100 and the image counts).
        kid_seed: seeds KID's subset draws.
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
        self.kid_subsets = kid_subsets
        self.kid_subset_size = kid_subset_size
        self.kid_seed = kid_seed
        self.sync_on_compute = sync_on_compute
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
        broadcast: Callable[[Any], Any] = _identity,
    ) -> bool:
        """Load or compute the real statistics; every rank calls this. True on a cache hit.

        Args:
            real_images: uint8 images, as a tensor or a dataset of (C, H, W) tensors.
            identity: the dataset part of the cache key (see :func:`dataset_identity`).
            device: where the extractor and the metric states live.
            max_real_images: use only the first this many real images.
            batch_size: real images per extractor call.
            rank: this process's global rank.
            world_size: the number of processes.
            broadcast: sends rank 0's object to every rank (the strategy's ``broadcast``).
        """
        device = torch.device(device)
        num_real = len(real_images)
        if max_real_images is not None:
            num_real = min(num_real, max_real_images)
        if num_real < 2:
            raise ValueError(f"FID needs at least 2 real images, got {num_real}.")
        self.extractor.to(device)
        image_shape = tuple(_real_batch(real_images, [0]).shape[1:])
        num_features = count_features(self.extractor, image_shape, device)
        extractor_id = self.extractor_id or feature_extractor_id(self.extractor, num_features)
        self.metrics = SampleQualityMetrics(
            num_features,
            self.kid_subsets,
            self.kid_subset_size,
            self.kid_seed,
            self.sync_on_compute,
        ).to(device)
        self.num_real = num_real

        cached, path, key = None, None, {}
        if rank == 0 and self.cache_dir is not None:
            key = {
                "version": _CACHE_VERSION,
                "dataset": identity,
                "image_shape": list(image_shape),
                "num_real_images": num_real,
                "pixels_digest": _pixels_digest(real_images, num_real),
                "feature_extractor": extractor_id,
            }
            path = _cache_path(self.cache_dir, key)
            cached = _load_cache(path, key)
        self.cache_file = path
        if broadcast(cached is not None):
            self.metrics.load_real_states(cached)
            rank_zero_info(f"FID/KID: real statistics of {num_real} images loaded from {path}.")
            return True

        my_share = shard(num_real, rank, world_size)
        local = self._features(real_image_batches(real_images, my_share, batch_size))
        features = _gather_rows(local, world_size)
        self.metrics.set_real(features if rank == 0 else None)
        if rank == 0 and path is not None:
            payload = {"key": json.dumps(key, sort_keys=True), **self.metrics.real_states()}
            _save_atomically(path, payload)
            rank_zero_info(f"FID/KID: real statistics of {num_real} images cached in {path}.")
        return False

    def score(self, fake_batches: Iterable[Tensor], num_images: int) -> dict[str, float]:
        """FID/KID of this rank's uint8 fake batches; ``num_images`` counts all ranks' images."""
        metrics = self._require_metrics()
        metrics.add_fake(self._features(fake_batches))
        return metrics.compute(self.num_real, num_images)

    def evaluate(
        self,
        module: LightningModule,
        seeds: list[int],
        num_images: int,
        sampler: str,
        num_inference_steps: int,
        batch_size: int = 64,
        generation_context: Callable[[], AbstractContextManager] = contextlib.nullcontext,
    ) -> dict[str, float]:
        """Generate this rank's ``seeds`` with ``module.generate_from_seeds`` and score them.

        Each image depends only on its seed, so the value does not depend on the batch size
        or on how the seeds are split across ranks.
        """

        def generated() -> Iterator[Tensor]:
            for start in range(0, len(seeds), batch_size):
                with generation_context():
                    images = module.generate_from_seeds(
                        seeds[start : start + batch_size], num_inference_steps, sampler
                    )
                yield to_uint8(images)

        return self.score(generated(), num_images)

    def _features(self, batches: Iterable[Tensor]) -> Tensor:
        device = self._require_metrics().fid.device
        features = [extract_features(self.extractor, batch.to(device)) for batch in batches]
        if not features:
            return torch.empty(0, self.num_features, device=device)
        return torch.cat(features)

    def _require_metrics(self) -> SampleQualityMetrics:
        if self.metrics is None:
            raise RuntimeError("Call prepare() with the real images first.")
        return self.metrics


# ----------------------------------------------------------------------------- the callback
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
            raise ValueError(f"every_n_epochs must be at least 1, got {every_n_epochs}.")
        if num_images < 2:
            raise ValueError(f"FID needs at least 2 generated images, got num_images={num_images}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        if feature_extractor is None and feature not in INCEPTION_FEATURES:
            raise ValueError(f"feature must be one of {INCEPTION_FEATURES}, got {feature}.")
        if kid_subset_size is not None and kid_subset_size < 2:
            raise ValueError(f"kid_subset_size must be at least 2, got {kid_subset_size}.")
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
        evaluator = self._require_evaluator()
        my_share = shard(self.num_images, trainer.global_rank, trainer.world_size)
        seeds = [self.seed + i for i in my_share]
        was_training = pl_module.training
        try:
            with averaged_weights(trainer, pl_module):
                values = evaluator.evaluate(
                    pl_module,
                    seeds,
                    self.num_images,
                    self.sampler,
                    self.num_inference_steps,
                    self.batch_size,
                    generation_context=trainer.precision_plugin.forward_context,
                )
        finally:
            pl_module.train(was_training)
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
    if getattr(trainer, "_val_check_time_interval", None) is not None:
        return True
    return trainer.check_val_every_n_epoch != 1 or trainer.val_check_interval != 1.0
