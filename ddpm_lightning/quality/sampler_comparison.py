"""Compare samplers and step counts on one trained model by FID and KID."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from torch import nn

from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.quality.feature_extractors import build_feature_extractor
from ddpm_lightning.quality.real_images import RealImages, dataset_identity
from ddpm_lightning.quality.settings import FIDSettings
from ddpm_lightning.utils.precision import autocast_context
from ddpm_lightning.utils.tables import markdown_table

Precision = Literal["32", "bf16-mixed", "16-mixed"]


def evaluate_samplers(
    module: Any,
    real_images: LightningDataModule | RealImages,
    samplers: Sequence[tuple[str, int]] = (("dpm-solver++", 20),),
    settings: FIDSettings | None = None,
    feature_extractor: nn.Module | None = None,
    precision: Precision = "32",
) -> list[dict[str, Any]]:
    """FID and KID of ``module``'s samples for each (sampler, steps) pair, one row each.

    Every row samples the same seeds, in one process on the module's device, with the
    settings and real statistics cache of FIDCallback. ``module``: anything with
    ``image_generator`` (a ``DDPMModule``). ``real_images``: a datamodule (its
    ``train_dataset``), a dataset of uint8 (C, H, W) tensors or a uint8 (N, C, H, W) tensor
    (give those a ``settings.dataset_key`` to cache). ``samplers``: (name, steps) pairs like
    ``("ddim", 50)``; ``precision``: ``32``, ``bf16-mixed`` or ``16-mixed`` (autocast).

    Returns:
        One dict per pair: sampler, steps, num_images, fid, kid, kid_std and seconds (wall time).
    """
    settings = settings or FIDSettings()
    context = autocast_context(precision, module.device)
    generators = [
        module.image_generator(
            replace(settings.sampling, sampler=name, num_inference_steps=steps),
            autocast=context,
            description=f"{name}, {steps} steps",
        )
        for name, steps in samplers
    ]  # made first: a wrong name or step count stops before any real image is read
    source, identity = _real_source(real_images, settings.dataset_key)
    # A conditional model's images follow the real images' class mix where the data has one.
    class_counts = getattr(real_images, "class_counts", lambda: None)()
    extractor = build_feature_extractor(
        feature_extractor, settings.feature, settings.feature_extractor_weights_path
    )
    evaluator = settings.evaluator(extractor, sync_on_compute=False)  # one process
    device = module.device
    evaluator.prepare(source, identity, device, settings.max_real_images, settings.batch_size)
    rows = []
    for generator in generators:
        started = time.perf_counter()
        values = evaluator.evaluate(generator, settings.num_images, class_counts)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        sampling = generator.settings
        rows.append(
            {
                "sampler": sampling.sampler,
                "steps": sampling.num_inference_steps,
                "num_images": settings.num_images,
                **values,
                "seconds": time.perf_counter() - started,
            }
        )
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`evaluate_samplers` as a Markdown table (readable as plain text too)."""
    header = ["sampler", "steps", "images", "FID", "KID", "KID std", "seconds"]
    cells = [
        [row["sampler"], row["steps"], row["num_images"], f"{row['fid']:.3f}"]
        + [f"{row['kid']:.5f}", f"{row['kid_std']:.5f}", f"{row['seconds']:.1f}"]
        for row in rows
    ]
    return markdown_table(header, cells)


def _real_source(
    real_images: LightningDataModule | RealImages, dataset_key: str | None
) -> tuple[RealImages, dict[str, Any]]:
    if isinstance(real_images, LightningDataModule):
        if getattr(real_images, "train_dataset", None) is None:
            real_images.prepare_data()
            real_images.setup("fit")
        dataset = getattr(real_images, "train_dataset", None)
        if dataset is None:
            raise InvalidSettingError(
                f"{type(real_images).__name__} has no train_dataset to take real images from."
            )
        return dataset, dataset_identity(real_images, dataset_key)
    return real_images, {"dataset": dataset_key or type(real_images).__qualname__}
