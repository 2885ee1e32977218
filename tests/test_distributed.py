"""Real two-process DDP on the CPU (gloo), through the Trainer: shards, weights, single writes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import lightning as L
import pytest
import torch
from diffusers import DDPMPipeline
from lightning.pytorch.strategies import DDPStrategy

from ddpm_lightning import DDPMModule, ImageDataModule
from ddpm_lightning.callbacks import EMA

from .conftest import TINY_UNET, fit_tiny, write_images


class RecordRank(L.Callback):
    """Saves what each rank saw and ended with, for the parent test process to compare."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        # One fingerprint per image: its pixel sum (images are random, so sums are distinct).
        self.seen.extend(batch["images"].double().sum(dim=(1, 2, 3)).tolist())

    def on_train_end(self, trainer, pl_module):
        state = {
            name: value.detach().clone() for name, value in pl_module.unet.state_dict().items()
        }
        torch.save(
            {"seen": self.seen, "state": state, "world_size": trainer.world_size},
            self.folder / f"rank{trainer.global_rank}.pt",
        )


def test_two_process_ddp_on_cpu(tmp_path: Path, image_folder: Path) -> None:
    L.seed_everything(0)
    fit_tiny(
        tmp_path / "run",
        image_folder,
        [RecordRank(tmp_path)],
        train_batch_size=3,
        accelerator="cpu",
        devices=2,
        strategy="ddp_fork",
        max_epochs=2,
    )
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    assert all(record["world_size"] == 2 for record in ranks)
    # Same weights on both ranks (DDP averaged the gradients; the EMA copied into the module).
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), name
    # Each rank saw its own shard: 12 images, 6 per rank per epoch, no image on both in an epoch.
    first_epoch = [set(round(v, 3) for v in record["seen"][:6]) for record in ranks]
    assert len(first_epoch[0]) == len(first_epoch[1]) == 6
    assert not first_epoch[0] & first_epoch[1]
    # One grid per epoch and one pipeline, written once.
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == [
        "0000.png",
        "0001.png",
    ]
    assert DDPMPipeline.from_pretrained(tmp_path / "run").unet.config.sample_size == 16
    assert not list((tmp_path / "run").glob(".export-*"))


class PerImageNoise(DDPMModule):
    """Noise and timesteps that depend on each image, not on how images are batched."""

    def sample_noise(self, images, batch_idx, generator=None):
        noises, timesteps = [], []
        for image in images:
            seed = int(image.double().sum().mul(1000).round().item()) % 2**31
            generator = torch.Generator().manual_seed(seed)
            noises.append(torch.randn(image.shape, generator=generator))
            timesteps.append(torch.randint(0, 1000, (1,), generator=generator))
        return torch.stack(noises).to(images), torch.cat(timesteps).to(images.device)


def train_with_batches(
    image_folder: Path, batch_size: int, accumulate: int
) -> tuple[DDPMModule, EMA]:
    L.seed_everything(0)
    ema = EMA(decay=0.9)
    module = PerImageNoise(image_size=16, **TINY_UNET, lr_warmup_steps=2, learning_rate=1e-3)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        accumulate_grad_batches=accumulate,
        callbacks=[ema],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    datamodule = ImageDataModule(
        data_dir=str(image_folder), image_size=16, train_batch_size=batch_size, random_flip=False
    )
    trainer.fit(module, datamodule)
    assert trainer.global_step == 4  # 2 epochs x 32 images / 16 per optimizer step
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 4
    return module, ema


def test_accumulating_two_batches_of_8_equals_one_batch_of_16(tmp_path: Path) -> None:
    images = write_images(tmp_path / "images", 32)
    accumulated, accumulated_ema = train_with_batches(images, batch_size=8, accumulate=2)
    single, single_ema = train_with_batches(images, batch_size=16, accumulate=1)
    # After fit the module holds the EMA weights; the EMA updated once per optimizer step.
    for (name, a), b in zip(accumulated.unet.named_parameters(), single.unet.parameters()):
        assert torch.allclose(a, b, atol=1e-5), name
    assert (
        int(accumulated_ema._average_model.n_averaged)
        == int(single_ema._average_model.n_averaged)
        == 4
    )


class NaNOnRankOne(DDPMModule):
    """Rank 1 alone gets a NaN loss at step 1 (as from one bad image in its shard).

    Each rank writes the error it raises, then waits for the other: the launcher kills the
    remaining processes as soon as one fails, which could cut a slower rank's write short.
    """

    def __init__(self, error_folder: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.error_folder = Path(error_folder)

    def diffusion_loss(self, images, noise, noise_levels, class_labels=None):
        loss = super().diffusion_loss(images, noise, noise_levels, class_labels)
        if self.global_rank == 1 and self.global_step == 1:
            return loss * float("nan")
        return loss

    def training_step(self, batch, batch_idx):
        try:
            return super().training_step(batch, batch_idx)
        except FloatingPointError as error:
            (self.error_folder / f"rank{self.global_rank}.error").write_text(str(error))
            torch.distributed.barrier()
            raise


def test_a_nan_loss_on_one_rank_stops_every_rank(tmp_path: Path, image_folder: Path) -> None:
    # Without the shared decision, rank 0 would wait in the next gradient all-reduce until the
    # process group's timeout (30 minutes by default; 60 s here) and fail with another error.
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(start_method="fork", timeout=timedelta(seconds=60)),
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(Exception, match="FloatingPointError"):
        trainer.fit(
            NaNOnRankOne(str(tmp_path), image_size=16, **TINY_UNET, lr_warmup_steps=1),
            ImageDataModule(data_dir=str(image_folder), image_size=16, train_batch_size=3),
        )
    errors = {rank: (tmp_path / f"rank{rank}.error").read_text() for rank in (0, 1)}
    assert errors[1].startswith("The training loss became nan at step 1")
    assert errors[0].startswith("The training loss became non-finite on another rank at step 1")
