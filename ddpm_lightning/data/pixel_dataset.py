"""Decoded uint8 pixels as a torch dataset (a whole batch in one Arrow read), and its loader."""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def pixels_feature(channels: int, image_size: int, labelled: bool = False) -> datasets.Features:
    """The decoded columns: each image as a fixed-size list of C*H*W uint8 values (and its id).

    A fixed-size list is one flat uint8 buffer in Arrow, so a batch converts to a tensor
    without copying element by element (the ``numpy``/``torch`` formatters widen to int64).
    """
    length = channels * image_size * image_size
    features = {"pixels": datasets.Sequence(datasets.Value("uint8"), length=length)}
    if labelled:
        features["class_labels"] = datasets.Value("int64")
    return datasets.Features(features)


class PixelDataset(Dataset):
    """A decoded dataset as ``{"images": uint8 (B, C, H, W)}`` batches, one Arrow read each.

    With a ``class_labels`` column (``label_column`` was set) the batches carry int64
    ``class_labels`` too.
    """

    def __init__(self, decoded: datasets.Dataset, shape: tuple[int, int, int]) -> None:
        self.decoded = decoded
        self.shape = shape
        self.labelled = "class_labels" in decoded.column_names
        self._arrow = decoded.with_format("arrow")

    def __len__(self) -> int:
        return len(self.decoded)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        table = self._arrow[indices]
        column = table["pixels"]
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        flat = column.flatten().to_numpy(zero_copy_only=False)
        batch = {"images": torch.from_numpy(flat.reshape(len(indices), *self.shape).copy())}
        if self.labelled:
            labels = table["class_labels"].to_numpy()
            batch["class_labels"] = torch.from_numpy(labels.astype("int64"))
        return batch

    def held_out(self, fraction: float, seed: int) -> tuple[PixelDataset, PixelDataset | None]:
        """The images to train on and, for a ``fraction`` above 0, that share held out (seeded)."""
        if fraction <= 0:
            return self, None
        parts = self.decoded.train_test_split(test_size=fraction, seed=seed)
        return PixelDataset(parts["train"], self.shape), PixelDataset(parts["test"], self.shape)

    def class_counts(self, num_classes: int | None = None) -> list[int] | None:
        """Images per class id (at least ``num_classes`` counts); None without class labels."""
        if not self.labelled:
            return None
        labels = self._arrow["class_labels"].to_numpy()
        return np.bincount(labels, minlength=num_classes or 0).tolist()


def collate_pixels(batch: dict | list[dict]) -> dict[str, torch.Tensor]:
    """A batch dict as it is (``PixelDataset`` reads whole batches), or single items stacked."""
    if isinstance(batch, dict):
        return batch
    return {key: torch.stack([item[key] for item in batch]) for key in batch[0]}


def pixel_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    sampler: Sampler | None = None,
    restart_workers: bool = False,
) -> DataLoader:
    """A DataLoader of pixel batches, pinned for the transfer when there is a GPU.

    ``restart_workers``: start the workers anew every epoch (a stream reads its epoch when
    iterated); else they persist.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_pixels,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0 and not restart_workers,
    )
