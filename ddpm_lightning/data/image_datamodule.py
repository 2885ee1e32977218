"""``ImageDataModule``: images from the Hub, a local folder or a subclass, as [-1, 1] batches."""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Literal

import datasets
import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, DistributedSampler

from ddpm_lightning.data.class_labels import class_names, label_ids
from ddpm_lightning.data.image_decoding import make_decoder
from ddpm_lightning.data.pixel_dataset import PixelDataset, collate_pixels, pixels_feature
from ddpm_lightning.data.streaming import StreamedPixels, rank_stream
from ddpm_lightning.errors import (
    InvalidSettingError,
    MissingColumnError,
    MissingInputError,
    UsageError,
)
from ddpm_lightning.utils.checks import check_at_least
from ddpm_lightning.utils.seeding import seeded_generator

# val_dataloader's empty list is deliberate (no held-out images): Lightning's "make sure this
# was your intention" would be noise in every run without validation.
warnings.filterwarnings("ignore", "Total length of `list` across ranks is zero")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
#: The default ``num_proc``: a process per this many images, up to the cores and the cap.
IMAGES_PER_DECODE_PROCESS = 1000
MAX_DEFAULT_DECODE_PROCESSES = 8


class DatasetUnavailableError(UsageError, RuntimeError):
    """The dataset could not be loaded from the Hugging Face Hub."""


class ImageDataModule(LightningDataModule):
    """Unconditional image data for diffusion training, decoded and resized once.

    ``Dataset.map`` decodes every image once into uint8 (C, H, W) arrays in the ``datasets``
    cache (memory-mapped Arrow files): shared by workers and ranks, larger than RAM if need be,
    and reused by the next run. Flips and scaling to [-1, 1] run on the device, in
    ``on_after_batch_transfer``, so a quarter of the bytes cross the bus: the DataLoader gives
    ``{"images": uint8}``, the module gets float32 (call the hook yourself without a Trainer).

    With ``streaming`` nothing is downloaded or cached: images are read, decoded and shuffled
    (through a buffer) on the fly, each rank its own share (``split_dataset_by_node``).

    For another data source, override :meth:`load_dataset`.

    Args:
        dataset_name: a Hugging Face Hub dataset id, or ``"imagefolder"`` for a local folder.
        data_dir: the folder of images when ``dataset_name`` is ``"imagefolder"``.
        split: the dataset split to train on.
        image_column: the column that holds the images.
        label_column: a column of class labels for class-conditional training (None:
            unconditional). A ``ClassLabel`` keeps its ids; integers (sorted numerically) and
            strings (sorted alphabetically) become ids 0..K-1. Batches then carry int64
            ``class_labels``; :attr:`num_classes` and :attr:`id2label` describe the classes.
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
        if channels not in (1, 3):
            raise InvalidSettingError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}.")
        if image_size < 1:
            raise InvalidSettingError(
                f"image_size must be a positive number of pixels, got {image_size}."
            )
        check_at_least("train_batch_size", train_batch_size, 1)
        check_at_least("num_workers", num_workers, 0)
        if not 0.0 <= val_fraction < 1.0:
            raise InvalidSettingError(f"val_fraction must be in [0, 1), got {val_fraction}.")
        if num_proc is not None:
            check_at_least("num_proc", num_proc, 1)
        check_at_least("shuffle_buffer_size", shuffle_buffer_size, 1)
        if streaming and val_fraction:
            raise InvalidSettingError(
                "A streamed dataset has no validation split: set val_fraction to 0, or stream "
                "off (streaming: false) to hold out images."
            )
        self.save_hyperparameters()
        self.dataset_name = dataset_name
        self.data_dir = data_dir
        self.split = split
        self.image_column = image_column
        self.label_column = label_column
        self.image_size = image_size
        self.channels = channels
        self.center_crop = center_crop
        self.random_flip = random_flip
        self.train_batch_size = train_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.val_fraction = val_fraction
        self.cache_dir = cache_dir
        self.num_proc = num_proc
        self.streaming = streaming
        self.shuffle_buffer_size = shuffle_buffer_size
        self.prepare_data_per_node = prepare_data_per_node  # read by Lightning
        self.train_dataset: PixelDataset | StreamedPixels | None = None
        self.val_dataset: PixelDataset | None = None
        self._flip_generator = torch.Generator()
        self._names: list[str] | None = None
        self._flip_epoch: int | None = None

    # ----------------------------------------------------------------- the subclassing hook
    def load_dataset(self) -> datasets.Dataset:
        """Return the raw dataset: any ``datasets.Dataset`` with an ``image_column``.

        With ``streaming``, a ``datasets.IterableDataset`` (``load_dataset(..., streaming=True)``).

        Called in ``prepare_data`` (once per node) and in ``setup`` (every process), so it
        should be cheap the second time, as ``datasets``' cached downloads are.
        """
        if self.dataset_name == "imagefolder":
            self._check_image_folder()
            # A folder loads in moments: its "Downloading data" bars would be noise.
            bars_were_on = not datasets.are_progress_bars_disabled()
            datasets.disable_progress_bars()
            try:
                return datasets.load_dataset(
                    "imagefolder",
                    data_dir=self.data_dir,
                    split=self.split,
                    cache_dir=self.cache_dir,
                    streaming=self.streaming,
                )
            finally:
                if bars_were_on:
                    datasets.enable_progress_bars()
        try:
            return datasets.load_dataset(
                self.dataset_name,
                split=self.split,
                cache_dir=self.cache_dir,
                streaming=self.streaming,
            )
        except Exception as error:  # datasets raises many types for "not reachable"
            raise DatasetUnavailableError(
                f"Could not load the dataset {self.dataset_name!r} (split {self.split!r}) from "
                f"the Hugging Face Hub: {type(error).__name__}: {error}\n"
                "If you are offline or the Hub cannot be reached, train on a local folder of "
                "images instead:\n"
                "  in YAML:  data: {dataset_name: imagefolder, data_dir: path/to/images}\n"
                "  or:       --data.dataset_name imagefolder --data.data_dir path/to/images"
            ) from error

    # ----------------------------------------------------------------- classes
    @property
    def id2label(self) -> dict[int, str] | None:
        """Class names by id, or None without ``label_column`` (reads the dataset once)."""
        if self.label_column is None:
            return None
        names = self._names if self._names is not None else self._class_names(self.load_dataset())
        return dict(enumerate(names))

    @property
    def num_classes(self) -> int | None:
        """How many classes ``label_column`` holds (None without one); the CLI links it."""
        id2label = self.id2label
        return None if id2label is None else len(id2label)

    def class_counts(self) -> list[int] | None:
        """Training images per class id (after ``setup``), for FID's class proportions."""
        dataset = self._require(self.train_dataset)
        if self.label_column is None or not isinstance(dataset, PixelDataset):
            return None
        labels = dataset.decoded.with_format("arrow")["class_labels"].to_numpy()
        return np.bincount(labels, minlength=self.num_classes).tolist()

    def _class_names(self, dataset: datasets.Dataset | datasets.IterableDataset) -> list[str]:
        if self._names is None:
            self._names = class_names(dataset, self.label_column)
        return self._names

    # ----------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        """Download once per node, and decode into the on-disk cache when there is one."""
        if self.streaming:
            return
        dataset = self.load_dataset()
        if dataset.cache_files:
            self._decode(dataset)

    def setup(self, stage: str | None = None) -> None:
        """Build the decoded datasets on every process (a cache hit after ``prepare_data``)."""
        if self.train_dataset is not None:
            return
        if self.streaming:
            self.train_dataset = self._stream()
            return
        decoded = self._decode(self.load_dataset())
        if self.val_fraction > 0:
            parts = decoded.train_test_split(test_size=self.val_fraction, seed=self.seed)
            decoded, held_out = parts["train"], parts["test"]
            self.val_dataset = PixelDataset(held_out, self._shape())
        self.train_dataset = PixelDataset(decoded, self._shape())

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches; the order depends only on ``seed`` and the epoch (resume-safe)."""
        dataset = self._require(self.train_dataset)
        if isinstance(dataset, StreamedPixels):
            if dataset.length is None and self._has_trainer() and self.trainer.max_steps == -1:
                raise InvalidSettingError(
                    f"The streamed dataset {self.dataset_name!r} does not say how many images it "
                    "has, so an epoch has no known length: set --trainer.max_steps."
                )
            return self._loader(dataset, sampler=None)
        # A DistributedSampler even on one process: its order depends on the seed and epoch
        # only, so a resumed run sees the batches of an uninterrupted one.
        world_size = self.trainer.world_size if self._has_trainer() else 1
        sampler = DistributedSampler(dataset, world_size, self._global_rank(), seed=self.seed)
        return self._loader(dataset, sampler)

    def val_dataloader(self) -> DataLoader | list:
        """Held-out images in a fixed order; ``[]`` (Lightning's "no validation") without."""
        if self.val_fraction == 0:
            return []
        return self._loader(self._require(self.val_dataset), sampler=None)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Flip (training only) and scale uint8 pixels to [-1, 1] on the batch's device."""
        images = batch["images"]
        if images.dtype != torch.uint8:
            return batch
        if self.random_flip and self._is_training():
            flip = torch.rand(images.shape[0], generator=self._epoch_flip_generator()) < 0.5
            # Flip the whole batch, then copy the unflipped images back: two kernels, and
            # 3x faster on CPUs than a per-pixel torch.where (see BENCHMARKS.md).
            keep = (~flip).nonzero().squeeze(1).to(images.device)
            images = images.flip(-1).index_copy_(0, keep, images.index_select(0, keep))
        return {**batch, "images": images.float().div_(127.5).sub_(1.0)}

    # ----------------------------------------------------------------- helpers
    def _decode(self, dataset: datasets.Dataset) -> datasets.Dataset:
        if len(dataset) == 0:
            raise InvalidSettingError(
                f"The dataset {self.dataset_name!r} (split {self.split!r}) is empty."
            )
        size, labelled = self.image_size, self.label_column is not None
        dataset = self._undecoded(dataset)
        return dataset.map(
            **self._decoding(dataset),
            features=pixels_feature(self.channels, size, labelled),
            num_proc=self._decode_processes(len(dataset)),
            desc=f"Decoding and resizing to {size}px",
        )

    def _decoding(self, dataset: datasets.Dataset | datasets.IterableDataset) -> dict[str, Any]:
        """``map`` arguments that decode the images (and turn labels into ids), either path."""
        columns = dataset.column_names
        if columns is not None and self.image_column not in columns:
            raise MissingColumnError(
                f"The dataset has no column {self.image_column!r}; its columns are "
                f"{columns}. Set image_column to the one that holds the images."
            )
        inputs, ids = [self.image_column], None
        if self.label_column is not None:
            ids = label_ids(dataset, self.label_column, self._class_names(dataset))
            inputs.append(self.label_column)
        return {
            "function": make_decoder(self.image_size, self.channels, self.center_crop, ids),
            "batched": True,
            "batch_size": 64,
            "input_columns": inputs,
            "remove_columns": columns or inputs,
        }

    def _undecoded(self, dataset: datasets.Dataset | datasets.IterableDataset) -> Any:
        """Images as file bytes, decoded by us so that a corrupt file is named in the error."""
        feature = (dataset.features or {}).get(self.image_column)
        if isinstance(feature, datasets.Image) and feature.decode:
            return dataset.cast_column(self.image_column, datasets.Image(decode=False))
        return dataset

    def _decode_processes(self, num_images: int) -> int | None:
        if self.num_proc is not None:
            return self.num_proc if self.num_proc > 1 else None
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        wanted = min(
            cores or 1, MAX_DEFAULT_DECODE_PROCESSES, num_images // IMAGES_PER_DECODE_PROCESS
        )
        return wanted if wanted > 1 else None

    def _stream(self) -> StreamedPixels:
        stream = self.load_dataset()
        length = self._stream_length(stream)
        world_size = self.trainer.world_size if self._has_trainer() else 1
        stream = rank_stream(
            self._undecoded(stream),
            self.shuffle_buffer_size,
            self.seed,
            self._global_rank(),
            world_size,
        )
        decoded = stream.map(**self._decoding(stream))
        per_rank = None if length is None else math.ceil(length / world_size)
        return StreamedPixels(decoded, self._shape(), per_rank, self._current_epoch)

    def _stream_length(self, stream: datasets.IterableDataset) -> int | None:
        """Images in the split: from the dataset's info, or by counting a local folder's files."""
        splits = stream.info.splits or {}
        if self.split in splits and splits[self.split].num_examples:
            return splits[self.split].num_examples
        if self.dataset_name != "imagefolder" or not self.data_dir:
            return None
        split_folder = os.path.join(self.data_dir, self.split)
        folder = split_folder if os.path.isdir(split_folder) else self.data_dir
        return sum(
            name.lower().endswith(IMAGE_EXTENSIONS)
            for _, _, names in os.walk(folder)
            for name in names
        )

    def _shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    def _check_image_folder(self) -> None:
        if not self.data_dir:
            raise InvalidSettingError(
                "dataset_name is 'imagefolder' but no data_dir was given: set data_dir to the "
                "folder that holds your images (or set dataset_name to a Hub dataset id)."
            )
        if not os.path.isdir(self.data_dir):
            raise MissingInputError(
                f"The image folder {self.data_dir!r} does not exist (resolved to "
                f"{os.path.abspath(self.data_dir)!r}). Check data_dir."
            )
        for _, _, files in os.walk(self.data_dir):
            if any(name.lower().endswith(IMAGE_EXTENSIONS) for name in files):
                return
        raise MissingInputError(
            f"No images found in {self.data_dir!r} or its subfolders (looked for "
            f"{', '.join(IMAGE_EXTENSIONS)}). Check data_dir."
        )

    def _loader(
        self, dataset: PixelDataset | StreamedPixels, sampler: DistributedSampler | None
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.train_batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_pixels,
            pin_memory=torch.cuda.is_available(),
            # A stream reads its epoch when iterated: workers must start anew every epoch.
            persistent_workers=self.num_workers > 0 and not self.streaming,
        )

    def _epoch_flip_generator(self) -> torch.Generator:
        # Reseeded at each epoch from (seed, epoch, rank): flips are reproducible, differ
        # between ranks, and a run resumed at an epoch boundary flips as the original did.
        epoch = self._current_epoch()
        if self._flip_epoch != epoch:
            self._flip_generator = seeded_generator(self.seed, epoch, self._global_rank())
            self._flip_epoch = epoch
        return self._flip_generator

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self._has_trainer() else 0

    def _has_trainer(self) -> bool:
        return getattr(self, "trainer", None) is not None

    def _is_training(self) -> bool:
        return not self._has_trainer() or bool(self.trainer.training)

    def _global_rank(self) -> int:
        return self.trainer.global_rank if self._has_trainer() else 0

    @staticmethod
    def _require(dataset: Any) -> Any:
        if dataset is None:
            raise RuntimeError("Call datamodule.setup() (the Trainer does) before asking for data.")
        return dataset
