"""A torch view of decoded uint8 pixels that fetches a whole batch in one Arrow read."""

from __future__ import annotations

import datasets
import pyarrow as pa
import torch
from torch.utils.data import Dataset


def pixels_feature(channels: int, image_size: int) -> datasets.Features:
    """The decoded column: each image as a fixed-size list of C*H*W uint8 values.

    A fixed-size list is one flat uint8 buffer in Arrow, so a batch converts to a tensor
    without copying element by element (the ``numpy``/``torch`` formatters widen to int64).
    """
    length = channels * image_size * image_size
    return datasets.Features({"pixels": datasets.Sequence(datasets.Value("uint8"), length=length)})


class PixelDataset(Dataset):
    """The ``pixels`` column of a decoded dataset as uint8 (C, H, W), a batch per Arrow read."""

    def __init__(self, decoded: datasets.Dataset, shape: tuple[int, int, int]) -> None:
        self.decoded = decoded
        self.shape = shape
        self._arrow = decoded.with_format("arrow")

    def __len__(self) -> int:
        return len(self.decoded)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        column = self._arrow[indices]["pixels"]
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        flat = column.flatten().to_numpy(zero_copy_only=False)
        return torch.from_numpy(flat.reshape(len(indices), *self.shape).copy())


def collate_pixels(pixels: torch.Tensor | list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Wrap a (B, C, H, W) uint8 batch in the tutorial's ``{"images": ...}`` dict."""
    if isinstance(pixels, list):
        pixels = torch.stack(pixels)
    return {"images": pixels}
