"""Seeds in, images out: the one generation path of grids, FID/KID, predict and the commands."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
from lightning.pytorch import Trainer

from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.sampling.progress import sampling_progress
from ddpm_lightning.sampling.schedulers import check_sampler_name, check_sampler_steps
from ddpm_lightning.sampling.sharding import shard
from ddpm_lightning.utils.averaged_weights import averaged_weights
from ddpm_lightning.utils.checks import check_at_least

OnBatch = Callable[[torch.Tensor], None] | None
Labels = Sequence[int | str] | None


class ImageGenerator:
    """Generates one image per seed with a module's ``sample_images``, in batches.

    Image ``i`` depends only on ``seeds[i]``, never on batches or ranks. With a Trainer it uses
    the EMA weights if any, the Trainer's precision, and a progress bar where Lightning has one.

    Args:
        module: a ``DDPMModule`` (anything with ``sample_images``, ``image_shape`` and hparams).
        sampler: ``ddpm``, ``ddim``, ``dpm-solver++`` or ``unipc`` (the module's if None).
        num_inference_steps: sampler steps (the module's if None).
        batch_size: images per batch (all at once if None).
        trainer: the Trainer whose EMA weights, precision, ranks and progress bar to use.
        autocast: a context manager factory for generation without a Trainer (mixed precision).
        description: the progress bar's label.
        guidance_scale: classifier-free guidance of a class-conditional module (1: none).
    """

    def __init__(
        self,
        module: Any,
        sampler: str | None = None,
        num_inference_steps: int | None = None,
        batch_size: int | None = None,
        trainer: Trainer | None = None,
        autocast: Callable[[], AbstractContextManager] | None = None,
        description: str = "Sampling",
        guidance_scale: float = 1.0,
    ) -> None:
        hparams = module.hparams
        self.module = module
        self.sampler = check_sampler_name(hparams.sampler if sampler is None else sampler)
        steps = hparams.num_inference_steps if num_inference_steps is None else num_inference_steps
        num_train_timesteps = module.noise_scheduler.config.num_train_timesteps
        self.num_inference_steps = check_sampler_steps(steps, num_train_timesteps)
        if batch_size is not None:
            check_at_least("batch_size", batch_size, 1)
        self.batch_size = batch_size
        self.trainer = trainer
        self.autocast = autocast
        self.description = description
        self.guidance_scale = module.classes.check_guidance(guidance_scale)

    def __call__(
        self, seeds: Sequence[int], on_batch: OnBatch = None, class_labels: Labels = None
    ) -> torch.Tensor:
        """Float (N, C, H, W) images in [0, 1] on the module's device, one per seed.

        With ``on_batch`` each batch goes there instead (FID never holds every image at once).
        A conditional module takes a class (id or name) per seed in ``class_labels``.
        """
        seeds = [int(seed) for seed in seeds]
        ids = self.module.classes.ids(class_labels)
        if ids is not None and len(ids) != len(seeds):
            raise InvalidSettingError(
                f"{len(ids)} class labels for {len(seeds)} seeds: one per seed."
            )
        batch_size = self.batch_size or max(len(seeds), 1)
        starts = range(0, len(seeds), batch_size)
        kept = [torch.empty(0, *self.module.image_shape, device=self.module.device)]
        total = len(starts) * self.num_inference_steps
        with (
            self._weights_and_precision(),
            sampling_progress(total, self.description, self.trainer) as bar,
        ):
            for start in starts:
                images = self.module.sample_images(
                    seeds[start : start + batch_size],
                    self.sampler,
                    self.num_inference_steps,
                    on_step=None if bar is None else bar.update,
                    class_labels=None if ids is None else ids[start : start + batch_size],
                    guidance_scale=self.guidance_scale,
                ).float()
                if on_batch is None:
                    kept.append(images)
                else:
                    on_batch(images)
        return torch.cat(kept)

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
        gathered = self.trainer.strategy.all_gather(torch.cat([images, padding]))
        return torch.cat([gathered[other, : len(block)] for other, block in enumerate(blocks)])

    @contextlib.contextmanager
    def _weights_and_precision(self) -> Any:
        if self.trainer is None:
            with self.autocast() if self.autocast else contextlib.nullcontext():
                yield
            return
        with averaged_weights(self.trainer, self.module):
            with self.trainer.precision_plugin.forward_context():
                yield
