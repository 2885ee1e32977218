"""How generation splits a list of seeds over ranks: contiguous blocks, one scheme everywhere."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Dataset, DistributedSampler


def shard(num_items: int, rank: int, world_size: int) -> range:
    """The contiguous block of ``range(num_items)`` that ``rank`` handles.

    Contiguous, so the ranks' blocks in turn are the one-process order: gathered images and
    FID/KID features (KID's subset draws depend on the order) match one process.
    """
    per_rank, extra = divmod(num_items, world_size)
    start = rank * per_rank + min(rank, extra)
    return range(start, start + per_rank + (rank < extra))


class ContiguousShardSampler(DistributedSampler):
    """``trainer.predict``'s sampler: this rank's :func:`shard`, in order, never padded.

    A ``DistributedSampler``, so Lightning keeps it instead of injecting its own strided one.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.indices = shard(len(dataset), rank, num_replicas)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
