"""The ``ImageDataModule`` settings that cannot work, refused before any data is read."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.utils.checks import check_at_least

if TYPE_CHECKING:
    from ddpm_lightning.data.image_datamodule import ImageDataModule


def check_data_settings(data: ImageDataModule) -> None:
    """Refuse a datamodule's impossible settings, with the allowed values in the message.

    Raises:
        InvalidSettingError: naming the setting (a ``ValueError``).
    """
    if data.channels not in (1, 3):
        raise InvalidSettingError(
            f"channels must be 1 (grayscale) or 3 (RGB), got {data.channels}."
        )
    if data.image_size < 1:
        raise InvalidSettingError(
            f"image_size must be a positive number of pixels, got {data.image_size}."
        )
    check_at_least("train_batch_size", data.train_batch_size, 1)
    check_at_least("num_workers", data.num_workers, 0)
    if not 0.0 <= data.val_fraction < 1.0:
        raise InvalidSettingError(f"val_fraction must be in [0, 1), got {data.val_fraction}.")
    if data.num_proc is not None:
        check_at_least("num_proc", data.num_proc, 1)
    check_at_least("shuffle_buffer_size", data.shuffle_buffer_size, 1)
    if data.streaming and data.val_fraction:
        raise InvalidSettingError(
            "A streamed dataset has no validation split: set val_fraction to 0, or stream "
            "off (streaming: false) to hold out images."
        )
