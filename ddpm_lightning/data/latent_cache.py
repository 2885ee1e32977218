"""Latents encoded once: an autoencoder's mean and std per decoded image, in the ``datasets`` cache.

Like the decoded pixels (:mod:`ddpm_lightning.data.decoding`), the latents are written once
by ``Dataset.map`` next to the pixels' cache file and memory-mapped by later runs. The cache
file's fingerprint is the pixels' (image settings, files) plus the autoencoder's identity, so
another autoencoder or other images never read it. Each image keeps the encoder's mean and
std, not one drawn latent, so every step draws a fresh latent (as EDM2 does); with random
flips the mirrored image is encoded too (latents themselves are never flipped).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow as pa
import torch
from datasets.fingerprint import Hasher
from torch.utils.data import Dataset

from ddpm_lightning.data.pixel_dataset import PixelDataset

#: Bumped whenever the cache's layout or meaning changes.
LATENT_CACHE_VERSION = 1

#: float [-1, 1] images (B, C, H, W) -> the encoder's (mean, std), each (B, c, h, w).
Encoder = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _flat(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False)


@dataclass(frozen=True)
class LatentEncoding:
    """How decoded pixels become cached latent moments.

    Attributes:
        encode: the autoencoder's encoder (see :data:`Encoder`).
        identity: the autoencoder's digest, part of the cache's fingerprint.
        shape: (c, h, w) of one latent.
        mirrored: also encode each image flipped horizontally (for random flips).
        batch_size: images per encoder call.
    """

    encode: Encoder
    identity: str
    shape: tuple[int, int, int]
    mirrored: bool
    batch_size: int = 32

    @property
    def views(self) -> int:
        """Latents per image: the image, and its mirror image when ``mirrored``."""
        return 2 if self.mirrored else 1

    def features(self, labelled: bool) -> datasets.Features:
        """Each image's means and stds as flat float32 lists (one Arrow buffer per batch)."""
        length = self.views * int(np.prod(self.shape))
        values = datasets.Sequence(datasets.Value("float32"), length=length)
        features = {"latent_mean": values, "latent_std": values}
        if labelled:
            features["class_labels"] = datasets.Value("int64")
        return datasets.Features(features)

    def fingerprint(self, pixels: PixelDataset) -> str:
        """The cache's name: the pixels' files, the autoencoder and this layout.

        The files are named by the decoding's fingerprint (a split adds its indices file).
        """
        files = [entry["filename"] for entry in pixels.decoded.cache_files]
        keys = (files, len(pixels), self.identity, self.mirrored, LATENT_CACHE_VERSION)
        return Hasher.hash(keys)

    def _encode_rows(self, table: pa.Table, shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
        pixels = torch.from_numpy(_flat(table["pixels"]).reshape(len(table), *shape).copy())
        images = pixels.float().div_(127.5).sub_(1.0)
        views = [images, images.flip(-1)] if self.mirrored else [images]
        moments = [self.encode(view) for view in views]
        means = torch.stack([mean for mean, _ in moments], 1).flatten(1)
        stds = torch.stack([std for _, std in moments], 1).flatten(1)
        rows = {"latent_mean": means.float().numpy(), "latent_std": stds.float().numpy()}
        if "class_labels" in table.column_names:
            rows["class_labels"] = table["class_labels"].to_numpy()
        return rows

    def into_cache(self, pixels: PixelDataset) -> LatentDataset:
        """The pixels' latents: encoded now, or read from the cache a run before wrote."""
        encoded = pixels.decoded.with_format("arrow").map(
            lambda table: self._encode_rows(table, pixels.shape),
            batched=True,
            batch_size=self.batch_size,
            features=self.features(pixels.labelled),
            remove_columns=pixels.decoded.column_names,
            new_fingerprint=self.fingerprint(pixels),
            desc=f"Encoding {len(pixels)} images with the autoencoder (once; later runs reuse it)",
        )
        return LatentDataset(encoded.with_format(None), self.views, self.shape)


class LatentDataset(Dataset):
    """Cached latent moments as ``{"latent_mean", "latent_std": (B, V, c, h, w)}`` batches.

    ``V`` is 2 when mirrored images were encoded too (view 1), else 1; the data module picks
    a view per image (its flips) after the transfer. With class labels, ``class_labels`` too.
    """

    def __init__(self, encoded: datasets.Dataset, views: int, shape: tuple[int, int, int]) -> None:
        self.encoded = encoded
        self.views = views
        self.shape = shape
        self.labelled = "class_labels" in encoded.column_names
        self._arrow = encoded.with_format("arrow")

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        table = self._arrow[indices]
        shape = (len(indices), self.views, *self.shape)
        batch = {
            key: torch.from_numpy(_flat(table[key]).reshape(shape).copy())
            for key in ("latent_mean", "latent_std")
        }
        if self.labelled:
            batch["class_labels"] = torch.from_numpy(
                table["class_labels"].to_numpy().astype("int64")
            )
        return batch

    def moments(self, batch_size: int = 256) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every image's own (unflipped) means and stds, in batches, for statistics."""
        means, stds = [], []
        for start in range(0, len(self), batch_size):
            batch = self.__getitems__(list(range(start, min(start + batch_size, len(self)))))
            means.append(batch["latent_mean"][:, 0])
            stds.append(batch["latent_std"][:, 0])
        return means, stds

    def class_counts(self, num_classes: int | None = None) -> list[int] | None:
        """Images per class id (at least ``num_classes`` counts); None without class labels."""
        if not self.labelled:
            return None
        labels = self._arrow["class_labels"].to_numpy()
        return np.bincount(labels, minlength=num_classes or 0).tolist()
