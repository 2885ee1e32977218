"""The on-disk cache of real-image FID/KID statistics, keyed by dataset and feature extractor."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn

#: Where real-image statistics are kept between runs (``None`` disables the cache).
DEFAULT_CACHE_DIR = "~/.cache/ddpm_lightning/fid"
_CACHE_VERSION = 1


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
