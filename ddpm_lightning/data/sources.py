"""Where raw images come from: a local folder or the Hugging Face Hub, cached or streamed."""

from __future__ import annotations

import os
from collections.abc import Iterator

import datasets

from ddpm_lightning.errors import InvalidSettingError, MissingInputError, UsageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


class DatasetUnavailableError(UsageError, RuntimeError):
    """The dataset could not be loaded from the Hugging Face Hub."""


def image_files(folder: str) -> Iterator[str]:
    """The image files (by extension) in ``folder`` and its subfolders, found as it is walked."""
    for root, _, names in os.walk(folder):
        for name in names:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                yield os.path.join(root, name)


def check_image_folder(data_dir: str | None) -> None:
    """Refuse a missing ``data_dir``, a folder that does not exist, or one without images."""
    if not data_dir:
        raise InvalidSettingError(
            "dataset_name is 'imagefolder' but no data_dir was given: set data_dir to the "
            "folder that holds your images (or set dataset_name to a Hub dataset id)."
        )
    if os.path.isfile(data_dir):
        raise MissingInputError(
            f"data_dir {data_dir!r} is a file, not a folder: set data_dir to the folder that "
            f"holds it ({os.path.dirname(os.path.abspath(data_dir))!r}) and your other images."
        )
    if not os.path.isdir(data_dir):
        raise MissingInputError(
            f"The image folder {data_dir!r} does not exist (resolved to "
            f"{os.path.abspath(data_dir)!r}). Check data_dir."
        )
    if next(image_files(data_dir), None) is None:  # stops at the first image
        raise MissingInputError(
            f"No images found in {data_dir!r} or its subfolders (looked for "
            f"{', '.join(IMAGE_EXTENSIONS)}). Check data_dir."
        )


def check_not_empty(dataset: datasets.Dataset, name: str, split: str) -> None:
    """Refuse a dataset without a single image: there would be nothing to train on."""
    if len(dataset) == 0:
        raise InvalidSettingError(f"The dataset {name!r} (split {split!r}) is empty.")


def load_image_folder(
    data_dir: str | None, split: str, cache_dir: str | None, streaming: bool
) -> datasets.Dataset | datasets.IterableDataset:
    """A checked local folder of images as ``datasets``' ``imagefolder`` (subfolders: labels)."""
    check_image_folder(data_dir)
    # A folder loads in moments: its "Downloading data" bars would be noise.
    bars_were_on = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(
            "imagefolder", data_dir=data_dir, split=split, cache_dir=cache_dir, streaming=streaming
        )
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()


def load_hub_dataset(
    name: str, split: str, cache_dir: str | None, streaming: bool
) -> datasets.Dataset | datasets.IterableDataset:
    """A Hub dataset's split; an unreachable one names the local-folder alternative.

    Raises:
        DatasetUnavailableError: whatever ``datasets`` raised, with what to do instead.
    """
    try:
        return datasets.load_dataset(name, split=split, cache_dir=cache_dir, streaming=streaming)
    except Exception as error:  # datasets raises many types for "not reachable"
        raise DatasetUnavailableError(
            f"Could not load the dataset {name!r} (split {split!r}) from "
            f"the Hugging Face Hub: {type(error).__name__}: {error}\n"
            "If you are offline or the Hub cannot be reached, train on a local folder of "
            "images instead:\n"
            "  in YAML:  data: {dataset_name: imagefolder, data_dir: path/to/images}\n"
            "  or:       --data.dataset_name imagefolder --data.data_dir path/to/images"
        ) from error


def stream_length(stream: datasets.IterableDataset, split: str, folder: str | None) -> int | None:
    """Images in a streamed split: from its info, else by counting a local ``folder``'s files.

    ``folder`` is the ``data_dir`` of an image folder (None for other sources); its ``split``
    subfolder is counted when there is one. None when the length cannot be known.
    """
    splits = stream.info.splits or {}
    if split in splits and splits[split].num_examples:
        return splits[split].num_examples
    if not folder:
        return None
    split_folder = os.path.join(folder, split)
    return sum(1 for _ in image_files(split_folder if os.path.isdir(split_folder) else folder))
