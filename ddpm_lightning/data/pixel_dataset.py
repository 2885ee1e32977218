"""A torch view of decoded uint8 pixels that fetches a whole batch in one Arrow read."""

from __future__ import annotations

import datasets
import pyarrow as pa
import torch
from torch.utils.data import Dataset


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


def collate_pixels(batch: dict | list[dict]) -> dict[str, torch.Tensor]:
    """A batch dict as it is (``PixelDataset`` reads whole batches), or single items stacked."""
    if isinstance(batch, dict):
        return batch
    return {key: torch.stack([item[key] for item in batch]) for key in batch[0]}
