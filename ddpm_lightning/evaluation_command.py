"""``ddpm-lightning evaluate``: FID and KID per sampler, to pick the cheapest sampler."""

from __future__ import annotations

import os

import torch

from ddpm_lightning.data import ImageDataModule
from ddpm_lightning.loading import load_module, read_checkpoint
from ddpm_lightning.quality import (
    DEFAULT_CACHE_DIR,
    FIDSettings,
    InceptionFeature,
    evaluate_samplers,
    format_table,
)
from ddpm_lightning.sampling import SamplingSettings, parse_sampler_steps

#: What ``evaluate`` compares by default.
DDPM_COMPARISON = "ddpm:1000,ddim:50,dpm-solver++:20,unipc:20"
EDM_COMPARISON = "edm-heun:18,edm-euler:40,edm-dpm-solver++:20"


def evaluate(
    source: str,
    data_dir: str | None = None,
    dataset_name: str = "imagefolder",
    split: str = "train",
    image_column: str = "image",
    samplers: list[str] | str | None = None,
    num_images: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
    feature: InceptionFeature = 2048,
    feature_extractor_weights_path: str | None = None,
    max_real_images: int | None = None,
    cache_dir: str | None = DEFAULT_CACHE_DIR,
    device: str = "cuda" if torch.cuda.is_available() else "cpu",
    label_column: str | None = None,
    center_crop: bool | None = None,
) -> list[dict]:
    """Print FID and KID of a model's samples against its training images, per sampler.

    Every row samples the same seeds; the real statistics cache is shared with FIDCallback.

    Args:
        source: a .ckpt file (EMA weights when EMA was on), a pipeline folder, or a Hub id.
        data_dir: the folder of real images (with ``dataset_name: imagefolder``).
        dataset_name: a Hub dataset id, or ``imagefolder``.
        split: the dataset split of the real images.
        image_column: the column that holds the images.
        samplers: ``name:steps`` pairs: ``ddim:50`` or ``ddim:50,unipc:20`` (or a YAML list);
            None: ``ddpm:1000,ddim:50,dpm-solver++:20,unipc:20`` (EDM models:
            ``edm-heun:18,edm-euler:40,edm-dpm-solver++:20``).
        num_images: images generated per row.
        seed: the first image's seed.
        batch_size: images per generation and feature batch.
        feature: the Inception layer whose features are compared (2048 is the standard FID).
        feature_extractor_weights_path: a local Inception weights file (when it cannot download).
        max_real_images: use only this many real images.
        cache_dir: where real statistics are cached (None: never cached).
        device: ``cuda`` or ``cpu``.
        label_column: the real images' class column: a class-conditional model's images then
            follow its class mix (without one, they are spread evenly over the classes).
        center_crop: crop the real images' centre as the model's training data was (None: as
            the checkpoint's training run did; a pipeline folder or Hub id: no crop).
    """
    module = load_module(source).to(device)
    if samplers is None:
        edm = module.formulation.sampler_family().default_sampler.startswith("edm")
        samplers = EDM_COMPARISON if edm else DDPM_COMPARISON
    specs = samplers.split(",") if isinstance(samplers, str) else samplers
    pairs = [parse_sampler_steps(spec.strip()) for spec in specs]
    if center_crop is None:
        center_crop = trained_with_center_crop(source)
    real = ImageDataModule(
        dataset_name=dataset_name,
        data_dir=data_dir,
        split=split,
        image_column=image_column,
        label_column=label_column,
        image_size=module.hparams.image_size,
        channels=module.hparams.channels,
        random_flip=False,
        center_crop=center_crop,
    )
    settings = FIDSettings(
        num_images=num_images,
        sampling=SamplingSettings("dpm-solver++", 20, seed, batch_size=batch_size),
        feature=feature,
        feature_extractor_weights_path=feature_extractor_weights_path,
        max_real_images=max_real_images,
        cache_dir=cache_dir,
    )
    rows = evaluate_samplers(module, real, pairs, settings)
    print(format_table(rows))
    return rows


def trained_with_center_crop(source: str) -> bool:
    """Whether a checkpoint's training data was centre-cropped (its datamodule's setting)."""
    if not os.path.isfile(source):
        return False
    data = read_checkpoint(source).get("datamodule_hyper_parameters") or {}
    return bool(data.get("center_crop", False))
