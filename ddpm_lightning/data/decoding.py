"""A whole dataset decoded by ``Dataset.map``: once into the ``datasets`` cache, or on the fly.

One image file becomes pixels in :mod:`ddpm_lightning.data.image_decoding`; this module maps
that decoder over a dataset's rows and chooses how many processes decode into the cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

import datasets

from ddpm_lightning.data.class_labels import label_ids
from ddpm_lightning.data.image_decoding import make_decoder
from ddpm_lightning.data.pixel_dataset import PixelDataset, pixels_feature
from ddpm_lightning.errors import MissingColumnError

#: The default ``num_proc``: a process per this many images, up to the cores and the cap.
IMAGES_PER_DECODE_PROCESS = 1000
MAX_DEFAULT_DECODE_PROCESSES = 8

#: Either kind of dataset: cached (``Dataset``) or streamed (``IterableDataset``).
AnyDataset = datasets.Dataset | datasets.IterableDataset
_Rows = TypeVar("_Rows", datasets.Dataset, datasets.IterableDataset)


def check_image_column(columns: list[str] | None, image_column: str) -> None:
    """Refuse a dataset whose ``columns`` (None: not known up front) lack ``image_column``."""
    if columns is not None and image_column not in columns:
        raise MissingColumnError(
            f"The dataset has no column {image_column!r}; its columns are "
            f"{columns}. Set image_column to the one that holds the images."
        )


def undecoded(dataset: _Rows, image_column: str) -> _Rows:
    """Images as file bytes, decoded by us so that a corrupt file is named in the error."""
    feature = (dataset.features or {}).get(image_column)
    if isinstance(feature, datasets.Image) and feature.decode:
        return dataset.cast_column(image_column, datasets.Image(decode=False))
    return dataset


def decode_processes(num_proc: int | None, num_images: int) -> int | None:
    """``map``'s ``num_proc``: the one asked for, else one per 1,000 images up to the cores and 8.

    None (not 1) for a single process: ``map`` then decodes in this process.
    """
    if num_proc is not None:
        return num_proc if num_proc > 1 else None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    wanted = min(cores or 1, MAX_DEFAULT_DECODE_PROCESSES, num_images // IMAGES_PER_DECODE_PROCESS)
    return wanted if wanted > 1 else None


@dataclass(frozen=True)
class Decoding:
    """How a dataset's rows become uint8 (C, H, W) ``pixels`` (and ``class_labels`` ids).

    Attributes:
        image_column: the column that holds the images (undecoded: see :func:`undecoded`).
        image_size: the side of the square images.
        channels: 3 for RGB, 1 for grayscale.
        center_crop: keep the aspect ratio and crop the centre (False squashes).
        label_column: the column of class labels (None: unconditional).
        class_names: the label column's classes in id order (with ``label_column``).
    """

    image_column: str
    image_size: int
    channels: int
    center_crop: bool
    label_column: str | None = None
    class_names: list[str] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of each decoded image: (C, H, W)."""
        return (self.channels, self.image_size, self.image_size)

    def map_arguments(self, dataset: AnyDataset) -> dict[str, Any]:
        """``map`` arguments that decode the images (and turn labels into ids), either path."""
        inputs, ids = [self.image_column], None
        if self.label_column is not None:
            ids = label_ids(dataset, self.label_column, self.class_names)
            inputs.append(self.label_column)
        return {
            "function": make_decoder(self.image_size, self.channels, self.center_crop, ids),
            "batched": True,
            "batch_size": 64,
            "input_columns": inputs,
            "remove_columns": dataset.column_names or inputs,
        }

    def into_cache(self, dataset: datasets.Dataset, num_proc: int | None) -> PixelDataset:
        """Decode every image once into the cache: memory-mapped, shared, reused by later runs.

        ``num_proc``: decoding processes (see :func:`decode_processes`); the pixels are the
        same for any number.
        """
        decoded = dataset.map(
            **self.map_arguments(dataset),
            features=pixels_feature(self.channels, self.image_size, self.label_column is not None),
            num_proc=decode_processes(num_proc, len(dataset)),
            desc=f"Decoding and resizing to {self.image_size}px",
        )
        return PixelDataset(decoded, self.shape)
