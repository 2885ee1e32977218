"""The on-disk cache of real-image FID/KID features, keyed by dataset and feature extractor."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn

from ddpm_lightning.utils.atomic_files import write_atomically

#: Where real-image statistics are kept between runs (``None`` disables the cache).
DEFAULT_CACHE_DIR = "~/.cache/ddpm_lightning/fid"
#: Bumped whenever what a cache file holds changes (2: the real features themselves).
CACHE_VERSION = 2


class RealStatisticsCache:
    """One file per key in ``cache_dir``; the key is stored inside and checked on load."""

    def __init__(self, cache_dir: str | os.PathLike) -> None:
        self.cache_dir = Path(cache_dir).expanduser()

    def path(self, key: dict[str, Any]) -> Path:
        """A readable, key-unique file name: dataset, size, channels, count and a digest."""
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        dataset = str(key["dataset"].get("dataset", "data"))
        dataset = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset)[-40:]
        channels, size = key["image_shape"][0], key["image_shape"][-1]
        name = f"{dataset}-{size}px-{channels}ch-{key['num_real_images']}-{digest}.pt"
        return self.cache_dir / name

    def load(self, key: dict[str, Any]) -> torch.Tensor | None:
        """The cached real features for ``key``, or None (missing, unreadable or another key)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a truncated or foreign file: recompute rather than fail
            rank_zero_warn(f"Ignoring the unreadable FID statistics cache {path}: {error}")
            return None
        if payload.get("key") != json.dumps(key, sort_keys=True):
            return None
        return payload["real_features"]

    def save(self, key: dict[str, Any], features: torch.Tensor) -> Path | None:
        """Store ``features`` atomically; a read-only or full disk only costs a warning."""
        path = self.path(key)
        payload = {"key": json.dumps(key, sort_keys=True), "real_features": features.cpu()}
        try:
            return write_atomically(path, lambda file: torch.save(payload, file))
        except OSError as error:
            rank_zero_warn(f"Could not cache the real FID statistics in {path}: {error}")
            return None
