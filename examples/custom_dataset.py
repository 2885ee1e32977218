"""Train on your own data source by overriding one hook: ``load_dataset``.

Any ``datasets.Dataset`` with an image column works; decoding, resizing, caching, flips and
scaling to [-1, 1] are inherited. This example draws coloured discs, so it runs anywhere.

    python examples/custom_dataset.py --epochs 1

The same hook can supply class labels from anything: ``ButterflySpecies`` reads the species
from the photos' file names and trains a class-conditional model (a grid row per species):

    python examples/custom_dataset.py --species ../shared/data/butterflies --epochs 1
"""

import argparse
import os

import datasets
import lightning as L
import numpy as np
from PIL import Image, ImageDraw

from ddpm_lightning import DDPMModule, ImageDataModule
from ddpm_lightning.sampling import SamplingSettings
from ddpm_lightning.training_outputs import TrainingOutputs


class DiscsDataModule(ImageDataModule):
    """Random coloured discs on black: a dataset made in code."""

    def load_dataset(self) -> datasets.Dataset:
        rng = np.random.default_rng(self.seed)
        images = []
        for _ in range(64):
            image = Image.new("RGB", (48, 48))
            x, y, r = rng.integers(8, 40), rng.integers(8, 40), rng.integers(4, 12)
            ImageDraw.Draw(image).ellipse(
                (x - r, y - r, x + r, y + r), fill=tuple(rng.integers(64, 256, 3))
            )
            images.append(image)
        return datasets.Dataset.from_dict({"image": images}).cast_column("image", datasets.Image())


class ButterflySpecies(ImageDataModule):
    """A folder of butterfly photos whose names start with the species number (001-010)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(dataset_name="imagefolder", label_column="species", **kwargs)

    def load_dataset(self) -> datasets.Dataset:
        dataset = super().load_dataset()
        files = dataset.cast_column("image", datasets.Image(decode=False))["image"]
        species = [os.path.basename(file["path"])[:3] for file in files]
        return dataset.add_column("species", species)  # strings: ids follow sorted names


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--output-dir", default="outputs/discs-16")
    parser.add_argument("--species", metavar="DATA_DIR", help="butterfly photos: by species")
    args = parser.parse_args()
    L.seed_everything(0)
    data = (
        ButterflySpecies(data_dir=args.species, image_size=16, train_batch_size=16)
        if args.species
        else DiscsDataModule(image_size=16, train_batch_size=16)
    )
    id2label = data.discover_classes()  # the species' names by id; None for the discs
    model = DDPMModule(
        image_size=16,
        block_out_channels=(32, 64),
        layers_per_block=1,
        norm_num_groups=8,
        learning_rate=1e-3,
        lr_warmup_steps=10,
        num_classes=data.num_classes,  # None for the discs: unconditional
        id2label=id2label,
    )
    outputs = TrainingOutputs(
        output_dir=args.output_dir,
        save_image_epochs=5,
        save_model_epochs=10,
        sampling=SamplingSettings("ddim", 20),
        overwrite_output_dir=True,
        throughput_window=2,
    )
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        callbacks=outputs.callbacks(),
        plugins=outputs.plugins(),  # atomic checkpoint writes
        logger=outputs.logger(),
    )
    trainer.fit(model, data)
