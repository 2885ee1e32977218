"""Seeds in, images out: the one generation path of grids, FID/KID, predict, sample, pipelines."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any

import torch
from lightning.pytorch import Trainer
from torch import nn

from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.sampling.classes import ClassConditioning
from ddpm_lightning.sampling.denoise import denoise, to_unit_range
from ddpm_lightning.sampling.progress import sampling_progress
from ddpm_lightning.sampling.samplers import SamplerFamily
from ddpm_lightning.sampling.settings import SamplingSettings
from ddpm_lightning.sampling.sharding import shard
from ddpm_lightning.utils.averaged_weights import averaged_weights

OnBatch = Callable[[torch.Tensor], None] | None
Labels = Sequence[int | str] | None
Decode = Callable[[torch.Tensor], torch.Tensor]


class ImageGenerator:
    """Generates one image per seed with a denoising network, in batches, on one or all ranks.

    Image ``i`` depends only on ``seeds[i]`` (its own CPU generator), never on batches or ranks.
    It owns the whole way from seeds to images: the sampler (checked against the family that
    fits the training formulation), the guidance rule, per-seed generators, batching, ranks, the
    EMA weights and precision of a Trainer, and progress. Nothing here calls a LightningModule.

    Args:
        unet: the denoising network, called as ``unet(x, t, class_labels=...).sample``.
        samplers: the sampler family of the model's formulation, with its scheduler config.
        classes: the model's classes (unconditional: ``ClassConditioning(None)``).
        settings: sampler, steps, seed, guidance and batch size.
        decode: model-space samples to float images in [0, 1] (pixels: a rescale).
        trainer: the Trainer whose EMA weights, precision, ranks and progress bar to use.
        averaged_from: the module whose EMA copy the Trainer's averaging callback holds.
        autocast: a context manager factory for mixed precision without a Trainer.
        description: the progress bar's label.
        image_shape: (C, H, W) of the decoded images (None: what the network denoises).
    """

    def __init__(
        self,
        unet: nn.Module,
        samplers: SamplerFamily,
        classes: ClassConditioning,
        settings: SamplingSettings | None = None,
        decode: Decode = to_unit_range,
        trainer: Trainer | None = None,
        averaged_from: nn.Module | None = None,
        autocast: Callable[[], AbstractContextManager] | None = None,
        description: str = "Sampling",
        image_shape: tuple[int, int, int] | None = None,
    ) -> None:
        settings = settings or SamplingSettings()
        sampler, steps = samplers.resolve(settings.sampler, settings.num_inference_steps)
        #: The settings in use: the family's default sampler and steps filled in.
        self.settings = replace(settings, sampler=sampler, num_inference_steps=steps)
        classes.check_guidance(self.settings.guidance_scale)
        self.unet = unet
        self.samplers = samplers
        self.classes = classes
        self.decode = decode
        self.trainer = trainer
        self.averaged_from = averaged_from
        self.autocast = autocast
        self.description = description
        self.image_shape = image_shape

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of what the network denoises."""
        size = self.unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else size
        return self.unet.config.in_channels, height, width

    @property
    def device(self) -> torch.device:
        """Where the network, and so the images, are."""
        return next(self.unet.parameters()).device

    def __call__(
        self, seeds: Sequence[int], on_batch: OnBatch = None, class_labels: Labels = None
    ) -> torch.Tensor:
        """Float (N, C, H, W) images in [0, 1] on the network's device, one per seed.

        With ``on_batch`` each batch goes there instead (FID never holds every image at once).
        A conditional model takes a class (id or name) per seed in ``class_labels``.
        """
        seeds = [int(seed) for seed in seeds]
        ids = self._ids(class_labels, len(seeds))
        batch_size = self.settings.batch_size or max(len(seeds), 1)
        starts = range(0, len(seeds), batch_size)
        kept: list[torch.Tensor] = []
        total = len(starts) * self.settings.num_inference_steps
        with (
            self._weights_and_precision(),
            sampling_progress(total, self.description, self.trainer) as bar,
        ):
            for start in starts:
                chunk = seeds[start : start + batch_size]
                generators = [torch.Generator("cpu").manual_seed(seed) for seed in chunk]
                labels = None if ids is None else ids[start : start + batch_size]
                images = self._denoise(generators, len(chunk), labels, bar)
                if on_batch is None:
                    kept.append(images)
                else:
                    on_batch(images)
        if not kept:
            # A rank without seeds: the images' shape, so that all_gather's shapes agree.
            return torch.empty(0, *(self.image_shape or self.sample_shape), device=self.device)
        return torch.cat(kept)

    def pipeline_batch(self, num_images: int, class_labels: Labels = None) -> torch.Tensor:
        """One batch from one CPU generator seeded with ``settings.seed``.

        What a diffusers pipeline given ``generator=torch.Generator().manual_seed(seed)`` makes.
        """
        ids = self._ids(class_labels, num_images)
        generator = torch.Generator("cpu").manual_seed(self.settings.seed)
        with self._weights_and_precision():
            return self._denoise(generator, num_images, ids, None)

    def on_all_ranks(
        self,
        seeds: Sequence[int],
        on_batch: OnBatch = None,
        gather: bool = True,
        class_labels: Labels = None,
    ) -> torch.Tensor:
        """Generate ``seeds`` split in contiguous blocks over the ranks (every rank must call).

        With ``gather`` every rank gets every image in seed order, else its own block only.
        """
        trainer = self.trainer
        world_size, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        blocks = [shard(len(seeds), other, world_size) for other in range(world_size)]
        labels = None if class_labels is None else [class_labels[i] for i in blocks[rank]]
        images = self([seeds[i] for i in blocks[rank]], on_batch, labels)
        if not gather or world_size == 1:
            return images
        # all_gather needs equal shapes: pad the shorter blocks (with zeros, not generation).
        longest = math.ceil(len(seeds) / world_size)
        padding = images.new_zeros(longest - len(images), *images.shape[1:])
        gathered = trainer.strategy.all_gather(torch.cat([images, padding]))
        return torch.cat([gathered[other, : len(block)] for other, block in enumerate(blocks)])

    def _ids(self, class_labels: Labels, num_images: int) -> list[int] | None:
        ids = self.classes.ids(class_labels)
        if ids is not None and len(ids) != num_images:
            raise InvalidSettingError(
                f"{len(ids)} class labels for {num_images} images: give one per image."
            )
        return ids

    def _denoise(
        self, generator: Any, num_images: int, ids: list[int] | None, bar: Any
    ) -> torch.Tensor:
        settings = self.settings
        labels, guidance = self.classes.conditioning(
            ids, num_images, settings.guidance_scale, self.device
        )
        was_training = self.unet.training
        self.unet.eval()
        try:
            samples = denoise(
                self.unet,
                self.samplers.make(settings.sampler),
                num_images,
                generator,
                settings.num_inference_steps,
                None if bar is None else bar.update,
                labels,
                guidance,
            )
        finally:
            self.unet.train(was_training)
        if bar is not None:  # a latent space's autoencoder takes a visible while
            bar.set_postfix_str("decoding", refresh=False)
        images = self.decode(samples).float()
        if bar is not None:
            bar.set_postfix_str("", refresh=False)
        return images

    @contextlib.contextmanager
    def _weights_and_precision(self) -> Iterator[None]:
        if self.trainer is None:
            with self.autocast() if self.autocast else contextlib.nullcontext():
                yield
            return
        owner = self.averaged_from  # the EMA copy mirrors its whole parameter list
        ema = (
            averaged_weights(self.trainer, owner) if owner is not None else contextlib.nullcontext()
        )
        with ema:
            with self.trainer.precision_plugin.forward_context():
                yield
