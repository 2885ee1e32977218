"""Mixed precision: finite losses, finite samples and exports; GPU variants marked ``gpu``."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline
from PIL import Image

from ddpm_lightning import DDPMModule, ImageDataModule

from .conftest import TINY_UNET, every_epoch_outputs


class RecordLosses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def train_and_sample(
    tmp_path: Path, image_folder: Path, precision: str, accelerator: str
) -> RecordLosses:
    L.seed_everything(0)
    losses = RecordLosses()
    outputs = every_epoch_outputs(tmp_path / "run", num_inference_steps=3, use_ema=True)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator=accelerator,
        devices=1,
        precision=precision,
        callbacks=[*outputs.callbacks(), losses],
        logger=outputs.logger(),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(
        DDPMModule(image_size=16, **TINY_UNET, lr_warmup_steps=1),
        ImageDataModule(data_dir=str(image_folder), image_size=16, train_batch_size=4),
    )
    assert losses.losses and all(np.isfinite(losses.losses))
    for epoch in (0, 1):
        grid = np.asarray(Image.open(tmp_path / "run" / "samples" / f"{epoch:04d}.png"))
        assert grid.std() > 0  # not a black (or uniform) grid
    pipeline = DDPMPipeline.from_pretrained(tmp_path / "run")
    assert all(torch.isfinite(p).all() for p in pipeline.unet.parameters())
    images = pipeline(
        batch_size=2,
        num_inference_steps=3,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert np.isfinite(images).all()
    # Resuming restores the precision plugin's state (the GradScaler's, for 16-mixed).
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    if precision == "16-mixed":
        assert "scale" in checkpoint["MixedPrecision"]  # the GradScaler's state
    return losses


def test_bf16_mixed_trains_and_samples_on_cpu(tmp_path: Path, image_folder: Path) -> None:
    train_and_sample(tmp_path, image_folder, "bf16-mixed", "cpu")


def test_bf16_sampling_gives_finite_images_close_to_fp32() -> None:
    module = DDPMModule(image_size=16, **TINY_UNET)
    reference = module.generate_from_seeds([0, 1], num_inference_steps=3, sampler="ddim")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = module.generate_from_seeds([0, 1], num_inference_steps=3, sampler="ddim")
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert (low - reference).abs().mean() < 0.05


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_mixed_precision_on_gpu(tmp_path: Path, image_folder: Path, precision: str) -> None:
    if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    train_and_sample(tmp_path, image_folder, precision, "gpu")
