"""``ImageDataModule``: images from the Hub, a local folder or a subclass, as [-1, 1] batches."""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Literal

import datasets
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, DistributedSampler

from ddpm_lightning.data import sources
from ddpm_lightning.data.augmentation import EpochFlips, flip_and_scale
from ddpm_lightning.data.class_labels import class_names
from ddpm_lightning.data.decoding import AnyDataset, Decoding, check_image_column, undecoded
from ddpm_lightning.data.latent_cache import LatentDataset, LatentEncoding
from ddpm_lightning.data.pixel_dataset import PixelDataset, pixel_loader
from ddpm_lightning.data.settings import check_data_settings
from ddpm_lightning.data.streaming import StreamedPixels, rank_stream
from ddpm_lightning.data.trainer_state import current_epoch, from_trainer, global_rank, world_size


class ImageDataModule(LightningDataModule):
    """Image data for diffusion training (class labels optional), decoded and resized once.

    Batches stay uint8 until ``on_after_batch_transfer`` flips and scales them to [-1, 1] on the
    device (call it yourself without a Trainer). Override :meth:`load_dataset` for other data.

    Args:
        dataset_name: a Hugging Face Hub dataset id, or ``"imagefolder"`` for a local folder.
        data_dir: the folder of images when ``dataset_name`` is ``"imagefolder"``.
        split: the dataset split to train on.
        image_column: the column that holds the images.
        label_column: a column of class labels for class-conditional training (None:
            unconditional). A ``ClassLabel`` keeps its ids; integers (sorted numerically) and
            strings (sorted alphabetically) become ids 0..K-1. Batches then carry int64
            ``class_labels``; :attr:`num_classes` and :attr:`id2label` (:meth:`discover_classes`).
        image_size: the side of the square images the model sees.
        channels: 3 for RGB; 1 keeps grayscale as a single channel.
        center_crop: keep the aspect ratio and crop the centre (False squashes, as the tutorial).
        random_flip: flip each training image horizontally with probability 1/2.
        train_batch_size: images per batch on each device.
        num_workers: DataLoader worker processes (0 is usually fastest: batches are cheap).
        seed: seeds the shuffle order, the flips and the validation split.
        val_fraction: the share of images held out for a validation loss (0 for none).
        cache_dir: where ``datasets`` keeps downloads and decoded arrays (its default if None).
        num_proc: processes that decode into the cache (``Dataset.map``); None: one per 1,000
            images, up to the cores and 8. The pixels are the same for any number.
        streaming: decode on the fly instead of caching (data larger than the disk); the epoch
            length comes from the dataset's split info (or a local folder's file count), else
            set ``trainer.max_steps``. No validation split.
        shuffle_buffer_size: images in the streaming shuffle buffer (more: better shuffled).
        prepare_data_per_node: build the cache on every node (True), or once on the first node
            when all nodes share one file system and ``cache_dir`` (False).
    """

    def __init__(
        self,
        dataset_name: str = "imagefolder",
        data_dir: str | None = None,
        split: str = "train",
        image_column: str = "image",
        label_column: str | None = None,
        image_size: int = 128,
        channels: Literal[1, 3] = 3,
        center_crop: bool = False,
        random_flip: bool = True,
        train_batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        val_fraction: float = 0.0,
        cache_dir: str | None = None,
        num_proc: int | None = None,
        streaming: bool = False,
        shuffle_buffer_size: int = 1000,
        prepare_data_per_node: bool = True,
    ) -> None:
        super().__init__()
        self.dataset_name, self.data_dir, self.split = dataset_name, data_dir, split
        self.image_column, self.label_column = image_column, label_column
        self.image_size, self.channels, self.center_crop = image_size, channels, center_crop
        self.random_flip, self.seed, self.val_fraction = random_flip, seed, val_fraction
        self.train_batch_size, self.num_workers = train_batch_size, num_workers
        self.cache_dir, self.num_proc, self.streaming = cache_dir, num_proc, streaming
        self.shuffle_buffer_size = shuffle_buffer_size
        self.prepare_data_per_node = prepare_data_per_node  # read by Lightning
        check_data_settings(self)
        self.save_hyperparameters()
        self.train_dataset: PixelDataset | StreamedPixels | None = None
        self.val_dataset: PixelDataset | None = None
        self._names: list[str] | None = None
        #: Cached latents the loaders serve instead of the images (:meth:`cache_latents`).
        self.train_latents: LatentDataset | None = None
        self.val_latents: LatentDataset | None = None
        self._flips = EpochFlips()

    def load_dataset(self) -> datasets.Dataset:
        """Return the raw dataset: any ``datasets.Dataset`` with an ``image_column``.

        With ``streaming``, a ``datasets.IterableDataset`` (``load_dataset(..., streaming=True)``).
        Called in ``prepare_data`` (once per node) and in ``setup`` (every process), so it
        should be cheap the second time, as ``datasets``' cached downloads are.
        """
        split, cache_dir, streaming = self.split, self.cache_dir, self.streaming
        if self.dataset_name == "imagefolder":
            return sources.load_image_folder(self.data_dir, split, cache_dir, streaming)
        return sources.load_hub_dataset(self.dataset_name, split, cache_dir, streaming)

    def discover_classes(self, dataset: AnyDataset | None = None) -> dict[int, str] | None:
        """Read ``label_column``'s class names once (from ``dataset``, else :meth:`load_dataset`).

        Returns :attr:`id2label`. ``prepare_data`` and ``setup`` call it: call it before them
        when a model needs :attr:`num_classes`.
        """
        if self.label_column is not None and self._names is None:
            dataset = self.load_dataset() if dataset is None else dataset
            self._names = class_names(dataset, self.label_column)
        return self.id2label

    @property
    def id2label(self) -> dict[int, str] | None:
        """Class names by id, once discovered; None before, or without ``label_column``."""
        return None if self._names is None else dict(enumerate(self._names))

    @property
    def num_classes(self) -> int | None:
        """How many classes ``label_column`` holds, once discovered; None before, or without."""
        return None if self._names is None else len(self._names)

    def class_counts(self) -> list[int] | None:
        """Training images per class id (after ``setup``), for FID's class proportions."""
        dataset = self._require(self.train_dataset)
        return dataset.class_counts(self.num_classes) if isinstance(dataset, PixelDataset) else None

    def cache_latents(self, encoding: LatentEncoding) -> bool:
        """Train (and validate) on cached latents of the decoded images instead of pixels.

        Encodes on the first call for these images and this autoencoder, reads the cache
        after (see :mod:`~ddpm_lightning.data.latent_cache`); ``train_dataset`` stays the
        images (FID's real images). False when there is no cache (streaming): the model then
        encodes each batch itself.
        """
        train, val = self._require(self.train_dataset), self.val_dataset
        if not isinstance(train, PixelDataset):
            return False
        self.train_latents = encoding.into_cache(train)
        self.val_latents = None if val is None else encoding.into_cache(val)
        return True

    def prepare_data(self) -> None:
        """Download once per node, and decode into the on-disk cache when there is one."""
        if not self.streaming:
            dataset = self.load_dataset()
            if dataset.cache_files:
                self._decode(dataset)
            self.discover_classes(dataset)

    def setup(self, stage: str | None = None) -> None:
        """Build the decoded datasets on every process (a cache hit after ``prepare_data``)."""
        if self.train_dataset is None and self.streaming:
            self.train_dataset = self._stream()
        elif self.train_dataset is None:
            pixels = self._decode(self.load_dataset())
            self.train_dataset, self.val_dataset = pixels.held_out(self.val_fraction, self.seed)

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches; the order depends only on ``seed`` and the epoch (resume-safe)."""
        dataset = self._require(self.train_dataset)
        if self.train_latents is not None:
            dataset = self.train_latents
        if isinstance(dataset, StreamedPixels):
            dataset.require_length(from_trainer(self, "max_steps", None), self.dataset_name)
            return self._loader(dataset)
        # A DistributedSampler even on one process: a resumed run sees an uninterrupted one's.
        sampler = DistributedSampler(dataset, world_size(self), global_rank(self), seed=self.seed)
        return self._loader(dataset, sampler)

    def val_dataloader(self) -> DataLoader | list:
        """Held-out images in a fixed order; ``[]`` (Lightning's "no validation") without."""
        if not self.val_fraction:
            return []
        dataset = self._require(self.val_dataset)
        return self._loader(dataset if self.val_latents is None else self.val_latents)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Flip (training only) and scale uint8 pixels to [-1, 1] on the batch's device."""
        flips = None
        if self.random_flip and from_trainer(self, "training", True):
            flips = self._flips.generator_for(self.seed, current_epoch(self), global_rank(self))
        return flip_and_scale(batch, flips)

    def _decode(self, dataset: datasets.Dataset) -> PixelDataset:
        sources.check_not_empty(dataset, self.dataset_name, self.split)
        dataset = undecoded(dataset, self.image_column)
        return self._decoding(dataset).into_cache(dataset, self.num_proc)

    def _stream(self) -> StreamedPixels:
        stream = self.load_dataset()
        folder = self.data_dir if self.dataset_name == "imagefolder" else None
        length, ranks = sources.stream_length(stream, self.split, folder), world_size(self)
        stream = undecoded(stream, self.image_column)
        stream = rank_stream(stream, self.shuffle_buffer_size, self.seed, global_rank(self), ranks)
        decoding = self._decoding(stream)
        decoded = stream.map(**decoding.map_arguments(stream))
        per_rank = None if length is None else math.ceil(length / ranks)
        return StreamedPixels(decoded, decoding.shape, per_rank, partial(current_epoch, self))

    def _decoding(self, dataset: AnyDataset) -> Decoding:
        check_image_column(dataset.column_names, self.image_column)  # before the label column
        self.discover_classes(dataset)
        size, channels, crop = self.image_size, self.channels, self.center_crop
        return Decoding(self.image_column, size, channels, crop, self.label_column, self._names)

    def _loader(self, dataset: Any, sampler: DistributedSampler | None = None) -> DataLoader:
        size, workers = self.train_batch_size, self.num_workers
        return pixel_loader(dataset, size, workers, sampler, restart_workers=self.streaming)

    @staticmethod
    def _require(dataset: Any) -> Any:
        if dataset is None:
            raise RuntimeError("Call datamodule.setup() (the Trainer does) before asking for data.")
        return dataset
