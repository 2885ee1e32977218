"""The tutorial's dataset: the Smithsonian butterflies subset on the Hugging Face Hub."""

from __future__ import annotations

from typing import Any

from ddpm_lightning.data.image_datamodule import ImageDataModule

BUTTERFLIES_DATASET = "huggan/smithsonian_butterflies_subset"


class ButterfliesDataModule(ImageDataModule):
    """``huggan/smithsonian_butterflies_subset`` with the tutorial's defaults.

    128 px squashed to a square (no crop), random horizontal flips, batches of 16: the
    ``ImageDataModule`` defaults, with the tutorial's dataset id. Every other argument of
    ``ImageDataModule`` is accepted and documented by the CLI.
    """

    def __init__(self, dataset_name: str = BUTTERFLIES_DATASET, **kwargs: Any) -> None:
        super().__init__(dataset_name=dataset_name, **kwargs)
