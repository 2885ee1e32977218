"""The baseline: the diffusers tutorial's data pipeline and plain Accelerate training loop.

Written from shared/reference/tutorial.md, step for step, so the benchmarks compare
ddpm_lightning with what a tutorial user runs rather than with a hand-tuned loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import datasets
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from torch.utils.data import DataLoader
from torchvision import transforms
from tqdm.auto import tqdm


@dataclass
class TrainingConfig:
    """The tutorial's ``TrainingConfig`` fields that the training loop reads."""

    image_size: int = 128
    train_batch_size: int = 16
    num_epochs: int = 50
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    lr_warmup_steps: int = 500
    mixed_precision: str = "no"  # "no", "fp16" or "bf16", as Accelerate spells them
    output_dir: str = "ddpm-butterflies-128"


def tutorial_preprocess(image_size: int) -> transforms.Compose:
    """Squash to a square, random flip, [0, 1] tensor, then [-1, 1]."""
    return transforms.Compose(
        [
            transforms.Resize((image_size, image_size)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize([0.5], [0.5]),
        ]
    )


def tutorial_dataset(
    data_dir: str, image_size: int, cache_dir: str | None = None
) -> datasets.Dataset:
    """``load_dataset("imagefolder")`` with the tutorial's on-the-fly ``set_transform``."""
    dataset = datasets.load_dataset(
        "imagefolder", data_dir=data_dir, split="train", cache_dir=cache_dir
    )
    preprocess = tutorial_preprocess(image_size)

    def transform(examples: dict[str, list[Any]]) -> dict[str, list[torch.Tensor]]:
        return {"images": [preprocess(image.convert("RGB")) for image in examples["image"]]}

    dataset.set_transform(transform)
    return dataset


def tutorial_dataloader(dataset: Any, batch_size: int, num_workers: int = 0) -> DataLoader:
    """The tutorial's loader (it leaves ``num_workers`` at 0; the benchmarks vary it)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers)


def make_optimizer_and_schedule(
    config: TrainingConfig, model: torch.nn.Module, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW with torch's defaults and the cosine schedule with linear warm-up."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    lr_scheduler = get_cosine_schedule_with_warmup(
        optimizer,
        num_warmup_steps=config.lr_warmup_steps,
        num_training_steps=steps_per_epoch * config.num_epochs,
    )
    return optimizer, lr_scheduler


def train_loop(
    config: TrainingConfig,
    model: UNet2DModel,
    noise_scheduler: DDPMScheduler,
    optimizer: torch.optim.Optimizer,
    train_dataloader: DataLoader,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    cpu: bool = False,
    log_with: str | None = None,
    project_dir: str | None = None,
    max_steps: int | None = None,
    on_step_start: Callable[[int], None] | None = None,
    on_step_end: Callable[[int], None] | None = None,
) -> list[float]:
    """The tutorial's loop, minus the end-of-epoch sampling and saving (timed elsewhere).

    ``max_steps`` ends training early, and the two callbacks receive the 0-based global step
    at the top and the bottom of each step, so a benchmark can time a window of steps.
    Returns the loss of every step (the value the tutorial's progress bar shows).
    """
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=log_with,
        project_dir=project_dir,
    )
    if log_with is not None:
        accelerator.init_trackers("train_example")
    model, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, lr_scheduler
    )
    global_step = 0
    losses: list[float] = []
    for epoch in range(config.num_epochs):
        progress_bar = tqdm(
            total=len(train_dataloader), disable=not accelerator.is_local_main_process
        )
        progress_bar.set_description(f"Epoch {epoch}")
        for batch in train_dataloader:
            if on_step_start is not None:
                on_step_start(global_step)
            clean_images = batch["images"]
            noise = torch.randn(clean_images.shape, device=clean_images.device)
            batch_size = clean_images.shape[0]
            timesteps = torch.randint(
                0,
                noise_scheduler.config.num_train_timesteps,
                (batch_size,),
                device=clean_images.device,
                dtype=torch.int64,
            )
            noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
            with accelerator.accumulate(model):
                noise_pred = model(noisy_images, timesteps, return_dict=False)[0]
                loss = F.mse_loss(noise_pred, noise)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            progress_bar.update(1)
            logs = {
                "loss": loss.detach().item(),
                "lr": lr_scheduler.get_last_lr()[0],
                "step": global_step,
            }
            losses.append(logs["loss"])
            progress_bar.set_postfix(**logs)
            accelerator.log(logs, step=global_step)
            if on_step_end is not None:
                on_step_end(global_step)
            global_step += 1
            if max_steps is not None and global_step >= max_steps:
                break
        progress_bar.close()
        if max_steps is not None and global_step >= max_steps:
            break
    accelerator.end_training()
    return losses
