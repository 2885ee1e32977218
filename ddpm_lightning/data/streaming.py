"""Streamed images: decoded on the fly from a ``datasets.IterableDataset``, nothing cached."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import datasets
import numpy as np
import torch
from datasets.distributed import split_dataset_by_node
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import IterableDataset, get_worker_info

from ddpm_lightning.errors import InvalidSettingError

# StreamedPixels splits its length over DataLoader workers, so Lightning's caution is noise.
warnings.filterwarnings("ignore", "Your `IterableDataset` has `__len__` defined")


def rank_stream(
    stream: datasets.IterableDataset, buffer_size: int, seed: int, rank: int, world_size: int
) -> datasets.IterableDataset:
    """This rank's share of ``stream``, shuffled alike on every rank so that shares are disjoint.

    ``datasets`` gives each rank whole shards when their number divides the world size; else
    every rank reads every example and keeps one in ``world_size``, which wastes reading.
    """
    if world_size > 1 and stream.n_shards % world_size:
        rank_zero_warn(
            f"The streamed dataset has {stream.n_shards} shard(s), which {world_size} ranks cannot "
            "share evenly: every rank reads all of it and keeps its own images. A dataset with a "
            "multiple of the world size in shards (files) is read once in all."
        )
    return split_dataset_by_node(stream.shuffle(seed, buffer_size=buffer_size), rank, world_size)


def to_item(row: dict, shape: tuple[int, int, int]) -> dict[str, torch.Tensor]:
    """A decoded row as the cached path's item: ``images`` (and ``class_labels``)."""
    item = {"images": torch.from_numpy(np.asarray(row["pixels"], dtype=np.uint8).reshape(shape))}
    if "class_labels" in row:
        item["class_labels"] = torch.tensor(row["class_labels"], dtype=torch.int64)
    return item


class StreamedPixels(IterableDataset):
    """One rank's streamed images as ``{"images": uint8 (C, H, W)}``, the same count per rank.

    With a known ``length`` (images per rank per epoch) a rank that runs short starts its share
    again, as ``DistributedSampler`` pads: DDP ranks then take the same number of steps, and
    Lightning's schedule and bar know the epoch's length. ``epoch_of`` reseeds the shuffle at each
    epoch from the Trainer's epoch, so a run resumed at an epoch boundary sees the same images.
    """

    def __init__(
        self,
        stream: datasets.IterableDataset,
        shape: tuple[int, int, int],
        length: int | None,
        epoch_of: Callable[[], int],
    ) -> None:
        self.stream = stream
        self.shape = shape
        self.length = length
        self.epoch_of = epoch_of

    def require_length(self, max_steps: int | None, name: str) -> None:
        """Refuse an epoch of unknown length when only ``max_steps`` (-1: none) could end it."""
        if self.length is None and max_steps == -1:
            raise InvalidSettingError(
                f"The streamed dataset {name!r} does not say how many images it "
                "has, so an epoch has no known length: set --trainer.max_steps."
            )

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("the streamed dataset's length is unknown")  # Lightning: no length
        return self.length

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self.stream.set_epoch(self.epoch_of())
        quota = self.length
        worker = get_worker_info()
        if worker is not None and quota is not None:  # datasets gives workers disjoint shards
            quota = quota // worker.num_workers + (worker.id < quota % worker.num_workers)
        produced = 0
        while quota is None or produced < quota:
            before = produced
            for row in self.stream:
                yield to_item(row, self.shape)
                produced += 1
                if produced == quota:
                    return
            if quota is None:
                return
            if produced == before:
                raise InvalidSettingError(
                    "A streamed share of the dataset is empty: use fewer DataLoader workers "
                    "(num_workers) or ranks than the dataset has shards (files)."
                )
