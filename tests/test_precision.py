"""Mixed precision: finite losses, finite samples and exports, the GradScaler across a resume.

fp16 autocast and ``torch.amp.GradScaler`` run on the CPU too, so 16-mixed is tested in the
default run through an explicit ``MixedPrecision`` plugin (``Trainer(precision="16-mixed")``
alone turns into bf16 on the CPU). The GPU variants are marked ``gpu``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline
from lightning.pytorch.plugins import MixedPrecision
from PIL import Image

from ddpm_lightning import DDPMModule
from ddpm_lightning.sampling import SamplingSettings

from .conftest import TINY_UNET, few_steps, fit_tiny

#: The grids' sampling: DDIM in 3 steps.
GRID_SAMPLING = {"sampling": few_steps(steps=3)}


class RecordLosses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


class RecordScale(L.Callback):
    """The GradScaler's scale when training starts (after a checkpoint was restored)."""

    def on_train_start(self, trainer, pl_module):
        self.scale_at_start = trainer.precision_plugin.scaler.get_scale()


def fp16_on_cpu(init_scale: float = 2.0**10) -> MixedPrecision:
    """16-mixed on the CPU, with a scaler that doubles its scale after every finite step."""
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=1)
    return MixedPrecision("16-mixed", "cpu", scaler=scaler)


def train_and_sample(
    tmp_path: Path,
    image_folder: Path,
    precision: str | None,
    accelerator: str,
    plugins: list | None = None,
) -> RecordLosses:
    L.seed_everything(0)
    losses = RecordLosses()
    trainer = fit_tiny(
        tmp_path / "run",
        image_folder,
        [losses],
        outputs=GRID_SAMPLING,
        max_epochs=2,
        accelerator=accelerator,
        devices=1,
        precision=precision,
        plugins=plugins or None,
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
    if isinstance(trainer.precision_plugin, MixedPrecision) and trainer.precision_plugin.scaler:
        saved = checkpoint["MixedPrecision"]["scale"]  # the GradScaler's state
        assert saved == trainer.precision_plugin.scaler.get_scale()
    return losses


def test_bf16_mixed_trains_and_samples_on_cpu(tmp_path: Path, image_folder: Path) -> None:
    train_and_sample(tmp_path, image_folder, "bf16-mixed", "cpu")


def test_fp16_mixed_trains_samples_and_resumes_its_grad_scaler_on_cpu(
    tmp_path: Path, image_folder: Path
) -> None:
    losses = train_and_sample(tmp_path, image_folder, None, "cpu", plugins=[fp16_on_cpu()])
    steps = len(losses.losses)  # 12 images in batches of 4, 2 epochs: 6 finite steps
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["MixedPrecision"]["scale"] == 2.0**10 * 2**steps
    # Resume with a fresh scaler: the saved scale replaces the new one's initial scale.
    recorder = RecordScale()
    trainer = fit_tiny(
        tmp_path / "run",
        image_folder,
        [recorder],
        ckpt_path="last",
        outputs=GRID_SAMPLING,
        max_epochs=3,
        accelerator="cpu",
        plugins=[fp16_on_cpu(init_scale=1.0)],
    )
    assert recorder.scale_at_start == 2.0**10 * 2**steps
    assert trainer.global_step == steps + 3
    assert trainer.precision_plugin.scaler.get_scale() == 2.0**10 * 2 ** (steps + 3)


def test_bf16_sampling_gives_finite_images_close_to_fp32() -> None:
    module = DDPMModule(image_size=16, **TINY_UNET)
    generator = module.image_generator(SamplingSettings("ddim", 3))
    reference = generator([0, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = generator([0, 1])
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert (low - reference).abs().mean() < 0.05


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_mixed_precision_on_gpu(tmp_path: Path, image_folder: Path, precision: str) -> None:
    if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    train_and_sample(tmp_path, image_folder, precision, "gpu")
