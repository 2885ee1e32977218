"""``DDPMModule``: the tutorial's UNet2DModel and DDPMScheduler as a LightningModule."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.optimization import SchedulerType, get_scheduler
from lightning.pytorch import LightningModule
from PIL import Image
from torch.utils.data import DataLoader

from ddpm_lightning.errors import InvalidSettingError, SourceUnavailableError
from ddpm_lightning.models.checkpoint_hparams import self_contained_hyperparameters
from ddpm_lightning.models.class_conditioning import ClassConditioning
from ddpm_lightning.models.objectives import (
    PREDICTION_TYPES,
    PredictionType,
    min_snr_weights,
    training_target,
)
from ddpm_lightning.models.unet import (
    TUTORIAL_BLOCK_OUT_CHANNELS,
    build_unet,
    check_data_matches_model,
    check_image_size,
    check_unet_matches_data,
    unet_config,
)
from ddpm_lightning.pipelines import ClassConditionalDDPMPipeline
from ddpm_lightning.sampling import (
    ContiguousShardSampler,
    check_sampler_name,
    check_sampler_steps,
    denoise,
    make_sampler,
)
from ddpm_lightning.sampling.generation import ImageGenerator
from ddpm_lightning.sampling.seeds import labels_in_proportion
from ddpm_lightning.utils.atomic_export import save_pipeline_atomically
from ddpm_lightning.utils.checks import check_at_least
from ddpm_lightning.utils.images import to_pil, to_uint8
from ddpm_lightning.utils.seeding import seeded_generator

BetaSchedule = Literal["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"]
VarianceType = Literal[
    "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"
]
SamplerName = Literal["ddpm", "ddim", "dpm-solver++", "unipc"]
MatmulPrecision = Literal["highest", "high", "medium"]
#: ``diffusers.optimization.get_scheduler`` names that need no extra rules.
LR_SCHEDULERS = tuple(t.value for t in SchedulerType if t.value != "piecewise_constant")
OnStep = Callable[[], object] | None


def _check_choice(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise InvalidSettingError(f"Unknown {name} {value!r}; choose one of {list(allowed)}.")


class DDPMModule(LightningModule):
    """Trains a ``UNet2DModel`` to denoise, exactly as the diffusers tutorial does.

    Every argument is a hyperparameter, so ``load_from_checkpoint(path)`` alone rebuilds the
    model. Callbacks, not the module, decide when to :meth:`generate` and :meth:`save_pretrained`.

    Args:
        image_size: side of the square images (follows the data; linked by the CLI).
        channels: image channels, 3 or 1 (follows the data; linked by the CLI).
        block_out_channels: channels per UNet level; the default is the tutorial's UNet.
        layers_per_block: ResNet layers per UNet block.
        down_block_types: one per level; None: the tutorial's (attention one above the bottom).
        up_block_types: one per level; None mirrors ``down_block_types`` the tutorial's way.
        norm_num_groups: GroupNorm groups (must divide every entry of block_out_channels).
        unet_kwargs: any other ``UNet2DModel`` argument (dropout, attention_head_dim, ...).
        pretrained_model_name_or_path: a pipeline folder or Hub id whose UNet and scheduler to use.
        num_classes: classes of a class-conditional model (None: unconditional). The UNet gets
            a class embedding with one extra, "null" class for classifier-free guidance.
        class_dropout_prob: while training, the share of labels replaced by the null class.
        id2label: the class names by id (the CLI takes them from the data).
        num_train_timesteps: noise levels of the forward process.
        beta_schedule: how the noise variance grows with the timestep.
        beta_start: first beta of the schedule.
        beta_end: last beta of the schedule.
        prediction_type: what the UNet predicts: the noise, the clean sample, or v.
        variance_type: the DDPM sampler's variance.
        clip_sample: clip predicted clean samples to [-1, 1] while sampling.
        scheduler_kwargs: any other ``DDPMScheduler`` argument.
        learning_rate: AdamW learning rate (after warm-up).
        adam_betas: AdamW betas (torch's defaults, as in the tutorial).
        adam_weight_decay: AdamW weight decay (torch's default).
        adam_epsilon: AdamW epsilon (torch's default).
        adam_fused: torch's fused AdamW (one kernel per step); None: on for CUDA devices.
        lr_scheduler: a ``diffusers.optimization.get_scheduler`` name.
        lr_warmup_steps: optimizer steps of linear warm-up.
        max_grad_norm: clip gradients to this norm unless the Trainer's is set; None: no clipping.
        min_snr_gamma: weight the loss by min(SNR, gamma) (5.0 is usual); None for plain MSE.
        sampler: default sampler of :meth:`generate` and ``predict``.
        num_inference_steps: default sampler steps (the tutorial's 1000 DDPM steps).
        seed: default seed of :meth:`generate` and ``predict``, and of the validation noise.
        num_predict_images: how many images ``trainer.predict`` generates.
        predict_batch_size: images per ``predict`` batch on each device.
        channels_last: channels-last UNet and inputs (faster convolutions on tensor cores).
        compile_unet: ``torch.compile`` the UNet in place (same checkpoints; minutes to compile).
        gradient_checkpointing: recompute the UNet's activations in the backward pass: less
            memory for larger images or batches, for more compute per step.
        float32_matmul_precision: ``high`` allows TF32 on Ampere+ GPUs (process-wide).
    """

    def __init__(
        self,
        image_size: int = 128,
        channels: int = 3,
        block_out_channels: tuple[int, ...] = TUTORIAL_BLOCK_OUT_CHANNELS,
        layers_per_block: int = 2,
        down_block_types: tuple[str, ...] | None = None,
        up_block_types: tuple[str, ...] | None = None,
        norm_num_groups: int = 32,
        unet_kwargs: dict[str, Any] | None = None,
        pretrained_model_name_or_path: str | None = None,
        num_classes: int | None = None,
        class_dropout_prob: float = 0.1,
        id2label: dict[int, str] | None = None,
        num_train_timesteps: int = 1000,
        beta_schedule: BetaSchedule = "linear",
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        prediction_type: PredictionType = "epsilon",
        variance_type: VarianceType = "fixed_small",
        clip_sample: bool = True,
        scheduler_kwargs: dict[str, Any] | None = None,
        learning_rate: float = 1e-4,
        adam_betas: tuple[float, float] = (0.9, 0.999),
        adam_weight_decay: float = 0.01,
        adam_epsilon: float = 1e-8,
        adam_fused: bool | None = None,
        lr_scheduler: str = "cosine",
        lr_warmup_steps: int = 500,
        max_grad_norm: float | None = 1.0,
        min_snr_gamma: float | None = None,
        sampler: SamplerName = "ddpm",
        num_inference_steps: int = 1000,
        seed: int = 0,
        num_predict_images: int = 16,
        predict_batch_size: int = 16,
        channels_last: bool = False,
        compile_unet: bool = False,
        gradient_checkpointing: bool = False,
        float32_matmul_precision: MatmulPrecision | None = None,
    ) -> None:
        super().__init__()
        _check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        _check_choice("beta_schedule", beta_schedule, get_args(BetaSchedule))
        _check_choice("variance_type", variance_type, get_args(VarianceType))
        _check_choice("lr_scheduler", lr_scheduler, LR_SCHEDULERS)
        if float32_matmul_precision is not None:
            precisions = get_args(MatmulPrecision)
            _check_choice("float32_matmul_precision", float32_matmul_precision, precisions)
        check_sampler_name(sampler)
        check_at_least("learning_rate", learning_rate, 0.0)
        check_at_least("lr_warmup_steps", lr_warmup_steps, 0)
        check_at_least("num_train_timesteps", num_train_timesteps, 1)
        check_sampler_steps(num_inference_steps, num_train_timesteps)
        check_at_least("num_predict_images", num_predict_images, 1)
        check_at_least("predict_batch_size", predict_batch_size, 1)
        if not 0.0 <= class_dropout_prob < 1.0:
            raise InvalidSettingError(
                f"class_dropout_prob must be in [0, 1), got {class_dropout_prob}."
            )
        self.classes = ClassConditioning(num_classes, id2label)
        self.save_hyperparameters()
        if pretrained_model_name_or_path:
            self.unet, self.noise_scheduler = self._load_pretrained(pretrained_model_name_or_path)
        else:
            config = unet_config(
                image_size,
                channels,
                block_out_channels,
                layers_per_block,
                down_block_types,
                up_block_types,
                {
                    "norm_num_groups": norm_num_groups,
                    # Set only when conditional: an unconditional config stays as it was.
                    **({} if num_classes is None else {"num_class_embeds": num_classes + 1}),
                    **(unet_kwargs or {}),
                },
            )
            self.unet = build_unet(config)
            self.noise_scheduler = DDPMScheduler(
                num_train_timesteps=num_train_timesteps,
                beta_schedule=beta_schedule,
                beta_start=beta_start,
                beta_end=beta_end,
                prediction_type=prediction_type,
                variance_type=variance_type,
                clip_sample=clip_sample,
                **(scheduler_kwargs or {}),
            )
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()

    def _load_pretrained(self, source: str) -> tuple[UNet2DModel, DDPMScheduler]:
        hparams = self.hparams
        try:
            # low_cpu_mem_usage needs accelerate (not a dependency); off, diffusers stays quiet.
            unet = UNet2DModel.from_pretrained(source, subfolder="unet", low_cpu_mem_usage=False)
            scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler")
        except (OSError, ValueError) as error:
            raise SourceUnavailableError(
                f"Could not load a diffusers pipeline from {source!r}: {error}\n"
                "pretrained_model_name_or_path must be a pipeline folder (with model_index.json, "
                "unet/ and scheduler/, as save_pretrained and the export command write) or a Hub "
                "id of one that can be reached."
            ) from error
        check_unet_matches_data(unet, hparams.image_size, hparams.channels, source)
        classes = unet.config.num_class_embeds and unet.config.num_class_embeds - 1
        if classes != hparams.num_classes:
            raise InvalidSettingError(
                f"The pretrained UNet from {source!r} has {classes or 'no'} classes, but "
                f"num_classes is {hparams.num_classes}: set num_classes to match it."
            )
        check_image_size(hparams.image_size, unet.config.block_out_channels)
        # from_pretrained gives eval mode, which Lightning keeps: fine-tuning would skip dropout.
        return unet.train(), scheduler

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the full UNet and scheduler config, so loading needs no pretrained source."""
        hyper_parameters = checkpoint.get("hyper_parameters")
        if hyper_parameters and hyper_parameters.get("pretrained_model_name_or_path"):
            checkpoint["pretrained_from"] = hyper_parameters["pretrained_model_name_or_path"]
            checkpoint["hyper_parameters"] = self_contained_hyperparameters(
                hyper_parameters, self.unet, self.noise_scheduler
            )

    def setup(self, stage: str) -> None:
        """Before any work: check the data against the UNet, then apply the speed switches."""
        datamodule = self.trainer.datamodule
        hparams = self.hparams
        check_data_matches_model(
            datamodule, hparams.image_size, hparams.channels, hparams.get("num_classes")
        )
        self.apply_speed_switches()

    def apply_speed_switches(self) -> None:
        """TF32 matmuls and ``torch.compile`` of the UNet, when asked (once per module)."""
        if self.hparams.get("float32_matmul_precision"):
            torch.set_float32_matmul_precision(self.hparams.float32_matmul_precision)
        if self.hparams.get("compile_unet") and not getattr(self, "_unet_compiled", False):
            self.unet.compile()
            self._unet_compiled = True

    def diffusion_loss(
        self,
        images: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        class_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The tutorial's loss: noise the images, predict the target, mean squared error."""
        noisy = self.noise_scheduler.add_noise(images, noise, timesteps)
        if self.hparams.channels_last:
            noisy = noisy.contiguous(memory_format=torch.channels_last)
        prediction = self.unet(noisy, timesteps, class_labels=class_labels).sample.float()
        prediction_type = self.noise_scheduler.config.prediction_type
        target = training_target(self.noise_scheduler, images, noise, timesteps, prediction_type)
        gamma = self.hparams.min_snr_gamma
        if gamma is None:
            return F.mse_loss(prediction, target.float())
        per_image = F.mse_loss(prediction, target.float(), reduction="none").mean(dim=(1, 2, 3))
        weights = min_snr_weights(self.noise_scheduler, timesteps, gamma, prediction_type)
        return (per_image * weights).mean()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One tutorial step: Gaussian noise, uniform int64 timesteps, MSE on the target."""
        images = self._checked_images(batch)
        noise, timesteps = self.sample_noise(images, batch_idx)
        labels = self._batch_labels(batch)
        if labels:
            labels["class_labels"] = self.drop_labels(labels["class_labels"], batch_idx)
        loss = self.diffusion_loss(images, noise, timesteps, **labels)
        if not self._finite_on_every_rank(loss):
            value = loss.item() if not torch.isfinite(loss) else "non-finite on another rank"
            raise FloatingPointError(
                f"The training loss became {value} at step {self.global_step} (epoch "
                f"{self.current_epoch}, batch {batch_idx}); training stopped. Lower the learning "
                "rate, keep gradient clipping on, or train in bf16-mixed or 32-bit precision."
            )
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _finite_on_every_rank(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every rank: all must stop together, or the rest hang."""
        finite = bool(torch.isfinite(loss))
        trainer = self._attached_trainer()
        if trainer is not None and trainer.world_size > 1:
            finite = not trainer.strategy.reduce_boolean_decision(not finite, all=False)
        return finite

    def _attached_trainer(self) -> Any:
        try:
            return self.trainer
        except RuntimeError:  # not attached: used on its own, as in a plain PyTorch loop
            return None

    def sample_noise(
        self, images: torch.Tensor, batch_idx: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gaussian noise like ``images`` and uniform int64 timesteps, one per image.

        By default from a generator seeded by the global seed, step, batch and rank, not the
        global RNG, which Lightning does not checkpoint: a resumed run draws the noise of the
        uninterrupted one. Override for other noise (offset noise, importance sampling, ...).
        """
        device = images.device
        if generator is None:
            keys = (torch.initial_seed(), self.global_step, batch_idx, self.global_rank)
            generator = seeded_generator(*keys, device=device)
        noise = torch.randn(images.shape, generator=generator, device=device, dtype=images.dtype)
        num_timesteps, shape = self.noise_scheduler.config.num_train_timesteps, (len(images),)
        timesteps = torch.randint(0, num_timesteps, shape, generator=generator, device=device)
        return noise, timesteps

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """The loss at noise fixed by ``seed`` and the batch: comparable across epochs."""
        images = self._checked_images(batch)
        generator = seeded_generator(self.hparams.seed, batch_idx, device=images.device)
        noise, timesteps = self.sample_noise(images, batch_idx, generator)
        loss = self.diffusion_loss(images, noise, timesteps, **self._batch_labels(batch))
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)

    def drop_labels(self, class_labels: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """Replace ``class_dropout_prob`` of the labels by the null class (guidance learns it).

        Seeded like :meth:`sample_noise` (a stream of its own): a resumed run drops the labels
        the uninterrupted one dropped.
        """
        keys = (torch.initial_seed(), self.global_step, batch_idx, self.global_rank, 1)
        generator = seeded_generator(*keys, device=class_labels.device)
        drop = torch.rand(len(class_labels), generator=generator, device=class_labels.device)
        return class_labels.masked_fill(
            drop < self.hparams.class_dropout_prob, self.classes.null_class
        )

    def _batch_labels(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``diffusion_loss``'s label argument, or none (so older overrides keep working)."""
        if not self.classes.conditional:
            return {}
        if "class_labels" not in batch:
            raise InvalidSettingError(
                f"The model is class-conditional (num_classes={self.hparams.num_classes}) but "
                "the batches carry no class_labels: set the data's label_column."
            )
        return {"class_labels": batch["class_labels"]}

    def _checked_images(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        images = batch["images"]
        expected = (self.hparams.channels, self.hparams.image_size, self.hparams.image_size)
        if tuple(images.shape[1:]) != expected:
            raise InvalidSettingError(
                f"Got a batch of images of shape {tuple(images.shape[1:])}, but the model was "
                f"built for {expected}: set the same image_size and channels for data and model."
            )
        return images

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW with a per-optimizer-step LR schedule over the Trainer's real step count."""
        hparams = self.hparams
        fused = self.device.type == "cuda" if hparams.adam_fused is None else hparams.adam_fused
        optimizer = torch.optim.AdamW(
            self.unet.parameters(),
            lr=hparams.learning_rate,
            betas=tuple(hparams.adam_betas),
            weight_decay=hparams.adam_weight_decay,
            eps=hparams.adam_epsilon,
            fused=fused,
        )
        total_steps = self.trainer.estimated_stepping_batches
        known = total_steps != float("inf")
        if not known and hparams.lr_scheduler not in ("constant", "constant_with_warmup"):
            raise InvalidSettingError(
                f"lr_scheduler {hparams.lr_scheduler!r} needs the number of training steps: set "
                "max_epochs or max_steps on the Trainer (or use lr_scheduler: constant)."
            )
        schedule = get_scheduler(
            hparams.lr_scheduler,
            optimizer,
            num_warmup_steps=hparams.lr_warmup_steps,
            num_training_steps=int(total_steps) if known else None,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

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

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the UNet makes."""
        size = self.unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else size
        return self.unet.config.in_channels, height, width

    def generate(
        self,
        num_images: int | None = None,
        seed: int | None = None,
        num_inference_steps: int | None = None,
        sampler: str | None = None,
        output_type: Literal["pil", "pt"] = "pil",
        class_labels: Sequence[int | str] | None = None,
        guidance_scale: float = 1.0,
    ) -> list[Image.Image] | torch.Tensor:
        """Images as one batch from one CPU generator seeded with ``seed``.

        With ``ddpm`` these are ``DDPMPipeline``'s images for the same seed (the global RNG is
        never touched); :meth:`generate_from_seeds` gives each image its own seed instead. None
        takes the module's ``seed``, ``num_inference_steps`` and ``sampler``; ``output_type``
        ``pt`` gives a float (N, C, H, W) tensor in [0, 1]. A conditional model takes one class
        (id or name) per image in ``class_labels`` (None: the null class), and classifier-free
        guidance above ``guidance_scale`` 1. ``num_images`` defaults to 16, or one per label.
        """
        _check_choice("output_type", output_type, ("pil", "pt"))
        ids = self.classes.ids(class_labels)
        if num_images is None:
            num_images = 16 if ids is None else len(ids)
        check_at_least("num_images", num_images, 1)
        if ids is not None and len(ids) != num_images:
            raise InvalidSettingError(
                f"Give one class label per image: {len(ids)} labels for {num_images} images."
            )
        settings = ImageGenerator(self, sampler, num_inference_steps, guidance_scale=guidance_scale)
        generator = torch.Generator("cpu").manual_seed(self.hparams.seed if seed is None else seed)
        images = self._denoise(
            generator,
            num_images,
            settings.sampler,
            settings.num_inference_steps,
            class_labels=ids,
            guidance_scale=guidance_scale,
        )
        return to_pil(images) if output_type == "pil" else images

    def generate_from_seeds(
        self,
        seeds: list[int],
        num_inference_steps: int | None = None,
        sampler: str | None = None,
        class_labels: Sequence[int | str] | None = None,
        guidance_scale: float = 1.0,
    ) -> torch.Tensor:
        """One image per seed, (N, C, H, W) in [0, 1]; image ``i`` depends on ``seeds[i]`` only.

        :class:`~ddpm_lightning.sampling.generation.ImageGenerator` adds batches, ranks and EMA.
        """
        generator = ImageGenerator(
            self, sampler, num_inference_steps, guidance_scale=guidance_scale
        )
        return generator(seeds, class_labels=class_labels)

    def sample_images(
        self,
        seeds: list[int],
        sampler: str,
        num_inference_steps: int,
        on_step: OnStep = None,
        class_labels: list[int] | None = None,
        guidance_scale: float = 1.0,
    ) -> torch.Tensor:
        """One batch, one image per seed (each its own CPU generator): what generation calls."""
        generators = [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]
        return self._denoise(
            generators,
            len(seeds),
            sampler,
            num_inference_steps,
            on_step,
            class_labels,
            guidance_scale,
        )

    def _denoise(
        self,
        generator: Any,
        num_images: int,
        sampler: str,
        steps: int,
        on_step: OnStep = None,
        class_labels: list[int] | None = None,
        guidance_scale: float = 1.0,
    ) -> torch.Tensor:
        labels = None
        if (
            self.classes.conditional
        ):  # no labels: the null class, for which guidance changes nothing
            ids = [self.classes.null_class] * num_images if class_labels is None else class_labels
            labels = torch.tensor(ids, dtype=torch.int64, device=self.device)
            guidance_scale = 1.0 if class_labels is None else guidance_scale
        scheduler = make_sampler(sampler, self.noise_scheduler.config)
        was_training = self.unet.training
        self.unet.eval()
        try:
            return denoise(
                self.unet, scheduler, num_images, generator, steps, on_step, labels, guidance_scale
            )
        finally:
            self.unet.train(was_training)

    def predict_dataloader(self) -> DataLoader:
        """Image indices ``0 .. num_predict_images - 1``, split over ranks as all generation is."""
        indices = range(self.hparams.num_predict_images)
        trainer = self._attached_trainer()
        world_size, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        sampler = ContiguousShardSampler(indices, num_replicas=world_size, rank=rank)
        return DataLoader(indices, batch_size=self.hparams.predict_batch_size, sampler=sampler)

    def predict_step(self, batch: torch.Tensor, batch_idx: int) -> dict[str, Any]:
        """Image ``i`` from seed ``seed + i``: uint8 (B, C, H, W) on the CPU, and the indices.

        A conditional model spreads the images evenly over its classes (in blocks, by id) and
        adds each image's ``class_names``.
        """
        generator = ImageGenerator(self, trainer=self.trainer, description="Predicting")
        labels = None
        if self.classes.conditional:
            every = labels_in_proportion(
                [1] * self.classes.null_class, self.hparams.num_predict_images
            )
            labels = [every[index] for index in batch.tolist()]
        images = generator((batch + self.hparams.seed).tolist(), class_labels=labels)
        prediction = {"images": to_uint8(images).cpu(), "index": batch.cpu()}
        if labels is not None:
            prediction["class_names"] = [self.classes.name(label) for label in labels]
        return prediction

    def to_pipeline(self) -> DDPMPipeline | ClassConditionalDDPMPipeline:
        """The current weights with the training noise schedule, as a diffusers pipeline.

        ``DDPMPipeline``, or for a conditional model ``ClassConditionalDDPMPipeline``.
        """
        scheduler = DDPMScheduler.from_config(self.noise_scheduler.config)
        if not self.classes.conditional:
            return DDPMPipeline(unet=self.unet, scheduler=scheduler)
        names = {index: self.classes.name(index) for index in range(self.classes.num_classes)}
        return ClassConditionalDDPMPipeline(self.unet, scheduler, id2label=names)

    def save_pretrained(self, save_directory: str | os.PathLike, overwrite: bool = False) -> None:
        """Write a folder that :meth:`to_pipeline`'s class loads; other files there stay.

        Atomic: an earlier pipeline is replaced, by a complete one, only if ``overwrite`` is True.
        """
        save_pipeline_atomically(self.to_pipeline(), save_directory, overwrite=overwrite)
