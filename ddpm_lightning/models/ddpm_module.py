"""``DDPMModule``: the tutorial's UNet2DModel, trained on a formulation's targets."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import torch
from diffusers import DiffusionPipeline
from lightning.pytorch import LightningModule
from PIL import Image
from torch.utils.data import DataLoader

from ddpm_lightning.formulations import Formulation, formulation_from_config
from ddpm_lightning.formulations.ddpm import check_choice
from ddpm_lightning.models.checkpoint_hparams import make_self_contained
from ddpm_lightning.models.latent_settings import (
    check_unet_takes,
    make_latents_self_contained,
    resolve_latent_scaling,
)
from ddpm_lightning.models.optimization import adamw_with_schedule, check_optimizer_settings
from ddpm_lightning.models.training_checks import check_finite_on_every_rank
from ddpm_lightning.models.unet import (
    TUTORIAL_BLOCK_OUT_CHANNELS,
    build_unet,
    check_data_matches_model,
    load_pretrained,
    module_unet_config,
)
from ddpm_lightning.sampling import ClassConditioning, ImageGenerator, SamplingSettings
from ddpm_lightning.sampling.prediction import PredictionSettings
from ddpm_lightning.spaces import LatentSpace, PixelSpace
from ddpm_lightning.spaces.autoencoder import load_autoencoder
from ddpm_lightning.utils.atomic_export import save_pipeline_atomically
from ddpm_lightning.utils.checks import check_at_least
from ddpm_lightning.utils.images import to_pil
from ddpm_lightning.utils.seeding import seeded_generator

#: Seeds the validation noise: the same for every epoch and run.
VALIDATION_SEED = 0


class DDPMModule(LightningModule):
    """Trains a ``UNet2DModel`` to denoise, exactly as the diffusers tutorial does.

    It owns the UNet, the objective (a :class:`~ddpm_lightning.formulations.Formulation`,
    DDPM by default) and the optimiser. Every argument is a hyperparameter, so
    ``load_from_checkpoint(path)`` alone rebuilds the model; how to sample is not one (see
    :meth:`image_generator` and :attr:`prediction`). Callbacks decide when to sample and export.

    Args:
        image_size: side of the square images (follows the data; linked by the CLI).
        channels: image channels, 3 or 1 (follows the data; linked by the CLI).
        block_out_channels: channels per UNet level; the default is the tutorial's UNet.
        layers_per_block: ResNet layers per UNet block.
        norm_num_groups: GroupNorm groups (must divide every entry of block_out_channels).
        unet_kwargs: any other ``UNet2DModel`` argument (down_block_types, dropout, ...).
        pretrained_model_name_or_path: a pipeline folder or Hub id whose UNet and scheduler to use.
        num_classes: classes of a class-conditional model (None: unconditional). The UNet gets
            a class embedding with one extra, "null" class for classifier-free guidance.
        class_dropout_prob: while training, the share of labels replaced by the null class.
        id2label: the class names by id (the CLI takes them from the data).
        formulation: noise levels, targets and loss weights (None: the tutorial's DDPM).
        autoencoder: train on the latents of this ``AutoencoderKL`` (a folder or Hub id;
            None: pixels). The UNet's channels and size follow its latents; ``image_size``
            and ``channels`` stay the images'. See :class:`~ddpm_lightning.spaces.LatentSpace`.
        autoencoder_subfolder: the autoencoder's subfolder (``vae`` of a pipeline).
        latent_scaling: ``"config"``: the autoencoder config's ``scaling_factor``,
            ``shift_factor``, ``latents_mean``/``latents_std``; ``"estimate"``: one over the
            std of the cached training latents (LDM's ``scale_by_std``, at the first fit);
            or those values as a dict (what checkpoints store).
        learning_rate: AdamW learning rate (after warm-up).
        adam_betas: AdamW betas (torch's defaults, as in the tutorial).
        adam_weight_decay: AdamW weight decay (torch's default).
        adam_epsilon: AdamW epsilon (torch's default).
        adam_fused: torch's fused AdamW; None: on CUDA when nothing clips (mixed precision cannot).
        lr_scheduler: a ``diffusers.optimization.get_scheduler`` name.
        lr_warmup_steps: optimizer steps of linear warm-up.
        max_grad_norm: clip gradients to this norm unless the Trainer's is set; None: no clipping.
    """

    def __init__(
        self,
        image_size: int = 128,
        channels: int = 3,
        block_out_channels: tuple[int, ...] = TUTORIAL_BLOCK_OUT_CHANNELS,
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        unet_kwargs: dict[str, Any] | None = None,
        pretrained_model_name_or_path: str | None = None,
        num_classes: int | None = None,
        class_dropout_prob: float = 0.1,
        id2label: dict[int, str] | None = None,
        formulation: Formulation | None = None,
        autoencoder: str | dict[str, Any] | None = None,
        autoencoder_subfolder: str | None = None,
        latent_scaling: str | dict[str, Any] = "config",
        learning_rate: float = 1e-4,
        adam_betas: tuple[float, float] = (0.9, 0.999),
        adam_weight_decay: float = 0.01,
        adam_epsilon: float = 1e-8,
        adam_fused: bool | None = None,
        lr_scheduler: str = "cosine",
        lr_warmup_steps: int = 500,
        max_grad_norm: float | None = 1.0,
    ) -> None:
        super().__init__()
        check_optimizer_settings(lr_scheduler, learning_rate, lr_warmup_steps)
        self.classes = ClassConditioning(num_classes, id2label, class_dropout_prob)
        self.formulation = formulation_from_config(formulation)
        self.save_hyperparameters(ignore=["formulation"])
        self.space = self._space(image_size, channels, autoencoder, autoencoder_subfolder)
        unet_channels, unet_size, _ = self.space.shape
        if pretrained_model_name_or_path:
            self.unet, self.formulation = load_pretrained(
                pretrained_model_name_or_path, unet_size, unet_channels, num_classes,
                self.formulation,
            )  # fmt: skip
        else:
            self.unet = build_unet(module_unet_config(
                unet_size, unet_channels, block_out_channels, layers_per_block, norm_num_groups,
                unet_kwargs, num_classes,
            ))  # fmt: skip
        check_unet_takes(self.unet, self.space.shape, autoencoder)
        self.hparams["formulation"] = self.formulation.config()
        #: What ``trainer.predict`` generates: set it before predicting (the CLI's --predict.*).
        self.prediction = PredictionSettings()

    def _space(
        self,
        image_size: int,
        channels: int,
        autoencoder: str | dict[str, Any] | None,
        subfolder: str | None,
    ) -> PixelSpace | LatentSpace:
        """Pixels, or the latents of the autoencoder (held here, so it moves with the UNet)."""
        if autoencoder is None:
            return PixelSpace(channels, image_size)
        self.autoencoder = load_autoencoder(autoencoder, subfolder)
        scaling = resolve_latent_scaling(self.hparams.latent_scaling, self.autoencoder.config)
        return LatentSpace(self.autoencoder, channels, image_size, scaling)

    @property
    def noise_scheduler(self) -> Any:
        """The formulation's training noise schedule (a diffusers scheduler)."""
        return self.formulation.scheduler

    def setup(self, stage: str) -> None:
        """Before any work: check the data against the UNet."""
        hparams = self.hparams
        check_data_matches_model(
            self.trainer.datamodule, hparams.image_size, hparams.channels, hparams.num_classes
        )
        if stage == "fit" and isinstance(self.space, LatentSpace):
            flips = getattr(self.trainer.datamodule, "random_flip", False)
            self.space.prepare(self.trainer, mirrored=bool(flips))
            self.hparams["latent_scaling"] = self.space.require_scaling().as_dict()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the full UNet, formulation (and autoencoder) config: loading needs no source."""
        make_self_contained(checkpoint, self.unet, self.formulation)
        checkpoint["unet_config"] = {k: v for k, v in self.unet.config.items() if k[0] != "_"}
        if isinstance(self.space, LatentSpace):
            make_latents_self_contained(checkpoint, self.space)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The autoencoder's weights may have changed: its digest is computed anew."""
        if isinstance(self.space, LatentSpace):
            self.space.forget_identity()

    def sample_noise(
        self, images: torch.Tensor, batch_idx: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The formulation's noise and noise levels (DDPM: timesteps), one per image.

        Seeded by the global seed, step, batch and rank, not by the global RNG (which Lightning
        does not checkpoint), so a resumed run draws the uninterrupted one's noise.
        """
        if generator is None:
            keys = (torch.initial_seed(), self.global_step, batch_idx, self.global_rank)
            generator = seeded_generator(*keys, device=images.device)
        return self.formulation.sample_noise(images, generator)

    def diffusion_loss(
        self,
        images: torch.Tensor,
        noise: torch.Tensor,
        noise_levels: torch.Tensor,
        class_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Noise the images, predict the formulation's target, weighted mean squared error."""
        example = self.formulation.training_example(images, noise, noise_levels)
        output = self.unet(
            example.network_input, example.noise_condition, class_labels=class_labels
        )
        return self.formulation.loss(output.sample, example)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One tutorial step: noise, noise levels, the loss on the formulation's target."""
        keys = (torch.initial_seed(), self.global_step, batch_idx, self.global_rank, 2)
        images = self.space.encode(batch, seeded_generator(*keys, device=self.device))
        noise, noise_levels = self.sample_noise(images, batch_idx)
        labels = self.classes.label_kwargs(
            batch, lambda labels: self.drop_labels(labels, batch_idx)
        )
        loss = self.diffusion_loss(images, noise, noise_levels, **labels)
        check_finite_on_every_rank(loss, self._trainer, batch_idx)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """The loss at noise fixed by the seed and the batch: comparable across epochs."""
        latents = seeded_generator(VALIDATION_SEED, batch_idx, 2, device=self.device)
        images = self.space.encode(batch, latents)
        generator = seeded_generator(VALIDATION_SEED, batch_idx, device=images.device)
        noise, noise_levels = self.sample_noise(images, batch_idx, generator)
        loss = self.diffusion_loss(images, noise, noise_levels, **self.classes.label_kwargs(batch))
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)

    def drop_labels(self, class_labels: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """Drop ``class_dropout_prob`` of the labels to the null class, seeded as the noise is."""
        keys = (torch.initial_seed(), self.global_step, batch_idx, self.global_rank, 1)
        return self.classes.drop_labels(
            class_labels, seeded_generator(*keys, device=class_labels.device)
        )

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW with a per-optimizer-step LR schedule over the Trainer's real step count."""
        return adamw_with_schedule(self.unet.parameters(), self.hparams, self.trainer, self.device)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip to ``max_grad_norm`` like the tutorial unless the Trainer sets its own."""
        if gradient_clip_val is None and self.hparams.max_grad_norm is not None:
            gradient_clip_val, gradient_clip_algorithm = self.hparams.max_grad_norm, "norm"
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def image_generator(
        self, settings: SamplingSettings | None = None, trainer: Any = None, **kwargs: Any
    ) -> ImageGenerator:
        """The one seeds-to-images path of this model (``trainer``: its EMA, precision, ranks).

        ``kwargs`` go to :class:`~ddpm_lightning.sampling.ImageGenerator` (autocast, description).
        """
        family = self.formulation.sampler_family()
        kwargs.setdefault("image_shape", self.space.image_shape)
        return ImageGenerator(
            self.unet, family, self.classes, settings, self.space.decode, trainer, self, **kwargs
        )

    def generate(
        self,
        num_images: int | None = None,
        seed: int = 0,
        num_inference_steps: int | None = None,
        sampler: str | None = None,
        output_type: Literal["pil", "pt"] = "pil",
        class_labels: Sequence[int | str] | None = None,
        guidance_scale: float = 1.0,
    ) -> list[Image.Image] | torch.Tensor:
        """One batch from one generator seeded with ``seed``: the exported pipeline's images.

        ``pt``: float (N, C, H, W) in [0, 1]; ``class_labels``: a class (id or name) per image.
        """
        check_choice("output_type", output_type, ("pil", "pt"))
        if num_images is None:
            num_images = 16 if class_labels is None else len(class_labels)
        check_at_least("num_images", num_images, 1)
        settings = SamplingSettings(sampler, num_inference_steps, seed, guidance_scale)
        images = self.image_generator(settings).pipeline_batch(num_images, class_labels)
        return to_pil(images) if output_type == "pil" else images

    def predict_dataloader(self) -> DataLoader:
        """Image indices ``0 .. num_images - 1``, split over ranks as all generation is."""
        world_size, rank = (self.trainer.world_size, self.global_rank) if self._trainer else (1, 0)
        return self.prediction.index_loader(world_size, rank)

    def predict_step(self, batch: torch.Tensor, batch_idx: int) -> dict[str, Any]:
        """Image ``i`` from seed ``seed + i`` as uint8 on the CPU, with its index (and class)."""
        settings = self.prediction.sampling
        return self.prediction.predict(self.image_generator(settings, self.trainer), batch)

    def to_pipeline(self) -> DiffusionPipeline:
        """The current weights as the formulation's diffusers pipeline (DDPMPipeline, ...).

        On latents: a :class:`~ddpm_lightning.pipelines.LatentDiffusionPipeline` with the
        autoencoder and the formulation's scheduler.
        """
        if isinstance(self.space, LatentSpace):
            scheduler, names = self.formulation.export_scheduler(), self.classes.names_by_id()
            return self.space.pipeline(self.unet, scheduler, names)
        return self.formulation.pipeline(self.unet, self.classes)

    def save_pretrained(self, save_directory: str | os.PathLike, overwrite: bool = False) -> None:
        """Write the pipeline atomically; replace an earlier one only if ``overwrite``."""
        save_pipeline_atomically(self.to_pipeline(), save_directory, overwrite=overwrite)
