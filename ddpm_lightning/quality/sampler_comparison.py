"""Compare samplers and step counts on one trained model by FID and KID."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from torch import nn

from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.models.ddpm_module import DDPMModule
from ddpm_lightning.quality.evaluator import (
    DEFAULT_CACHE_DIR,
    SampleQualityEvaluator,
    check_num_images,
)
from ddpm_lightning.quality.feature_extractors import (
    InceptionFeature,
    build_feature_extractor,
)
from ddpm_lightning.quality.real_images import RealImages, dataset_identity
from ddpm_lightning.sampling.generation import ImageGenerator

Precision = Literal["32", "bf16-mixed", "16-mixed"]
_AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def evaluate_samplers(
    module: DDPMModule,
    real_images: LightningDataModule | RealImages,
    samplers: Sequence[tuple[str, int]] = (("dpm-solver++", 20),),
    num_images: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
    feature_extractor: nn.Module | None = None,
    feature: InceptionFeature = 2048,
    feature_extractor_weights_path: str | None = None,
    feature_extractor_key: str | None = None,
    max_real_images: int | None = None,
    dataset_key: str | None = None,
    cache_dir: str | None = DEFAULT_CACHE_DIR,
    kid_subset_size: int | None = None,
    kid_subsets: int = 100,
    precision: Precision = "32",
) -> list[dict[str, Any]]:
    """FID and KID of ``module``'s samples for each (sampler, steps) pair, one row each.

    Every row samples the seeds ``seed ..``, in one process on the module's device; settings
    and real statistics cache are FIDCallback's. ``real_images``: a datamodule (its
    ``train_dataset``), a dataset of uint8 (C, H, W) tensors or a uint8 (N, C, H, W) tensor
    (give those a ``dataset_key`` to cache). ``samplers``: (name, steps) pairs like
    ``("ddim", 50)``; ``precision``: ``32``, ``bf16-mixed`` or ``16-mixed`` (autocast).

    Returns:
        One dict per pair: sampler, steps, num_images, fid, kid, kid_std and seconds (wall time).
    """
    check_num_images(num_images)
    for name, steps in samplers:
        ImageGenerator(module, name, steps)  # checks the name and the step count, early
    source, identity = _real_source(real_images, dataset_key)
    # A conditional model's images follow the real images' class mix where the data has one.
    class_counts = getattr(real_images, "class_counts", lambda: None)()
    extractor = build_feature_extractor(feature_extractor, feature, feature_extractor_weights_path)
    evaluator = SampleQualityEvaluator(
        extractor, feature_extractor_key, cache_dir, kid_subsets, kid_subset_size, seed, False
    )  # False: sync_on_compute, as this runs in one process
    device = module.device
    evaluator.prepare(source, identity, device, max_real_images, batch_size)
    context = _generation_context(precision, device)
    rows = []
    for name, steps in samplers:
        started = time.perf_counter()
        generator = ImageGenerator(
            module, name, steps, batch_size, autocast=context, description=f"{name}, {steps} steps"
        )
        values = evaluator.evaluate(generator, num_images, seed, class_counts)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rows.append({"sampler": name, "steps": steps, "num_images": num_images, **values})
        rows[-1]["seconds"] = time.perf_counter() - started
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`evaluate_samplers` as a Markdown table (readable as plain text too)."""
    header = ["sampler", "steps", "images", "FID", "KID", "KID std", "seconds"]
    lines = [
        [str(row["sampler"]), str(row["steps"]), str(row["num_images"]), f"{row['fid']:.3f}"]
        + [f"{row['kid']:.5f}", f"{row['kid_std']:.5f}", f"{row['seconds']:.1f}"]
        for row in rows
    ]
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines, strict=True)]

    def render(cells: list[str]) -> str:
        padded = [cells[0].ljust(widths[0])]
        padded += [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (widths[0] + 2)] + ["-" * (width + 1) + ":" for width in widths[1:]]
    return "\n".join([render(header), "|" + "|".join(rule) + "|", *map(render, lines)])


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


def _generation_context(
    precision: str, device: torch.device
) -> Callable[[], AbstractContextManager] | None:
    if precision == "32":
        return None
    if precision not in _AUTOCAST_DTYPES:
        choices = ["32", *_AUTOCAST_DTYPES]
        raise InvalidSettingError(f"precision must be one of {choices}, got {precision!r}.")
    return lambda: torch.autocast(device.type, dtype=_AUTOCAST_DTYPES[precision])
