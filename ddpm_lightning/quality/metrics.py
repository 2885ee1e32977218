"""torchmetrics' FID and KID fed with precomputed features, and how the work splits over ranks."""

from __future__ import annotations

import warnings

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from ddpm_lightning.utils.checks import check_at_least

#: KID subset size when enough images exist: small next to the usual 1000 to 10000 images,
#: so that subsets differ and KID's std means something (torch-fidelity uses 1000).
DEFAULT_KID_SUBSET_SIZE = 100


def _precomputed(num_features: int) -> nn.Module:
    """Hands features to torchmetrics as they are, so the extractor runs once for FID and KID."""
    module = nn.Identity()
    module.num_features = num_features
    return module


class SampleQualityMetrics:
    """torchmetrics' FID and KID fed with the same features, keeping real statistics on reset.

    Under DDP both metrics gather their states across ranks in ``compute``, so every rank must
    call :meth:`set_real` once and :meth:`add_fake` once before each :meth:`compute`. Real
    statistics live on rank 0 only, or the sum over ranks would count them once per rank.

    Args:
        kid_subset_size: images per KID subset (default: the smaller of 100 and the number of
            real and of generated images).
        kid_seed: seeds KID's subset draws, in a forked RNG (the global RNG is left alone).
    """

    def __init__(
        self,
        num_features: int,
        kid_subsets: int = 100,
        kid_subset_size: int | None = None,
        kid_seed: int = 0,
        sync_on_compute: bool = True,
    ) -> None:
        if kid_subset_size is not None:
            check_at_least("kid_subset_size", kid_subset_size, 2)
        self.num_features = num_features
        self.kid_subset_size = kid_subset_size
        self.kid_seed = kid_seed
        self.fid = FrechetInceptionDistance(
            feature=_precomputed(num_features),
            reset_real_features=False,
            sync_on_compute=sync_on_compute,
        )
        with warnings.catch_warnings():  # the features are small here; the warning is noise
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            self.kid = KernelInceptionDistance(
                feature=_precomputed(num_features),
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
