"""The one generation path: the same seeds give the same images through every way in."""

from __future__ import annotations

import io
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ddpm_lightning import DDPMModule, ImageDataModule
from ddpm_lightning.callbacks import FIDCallback, PNGPredictionWriter, SampleGridCallback
from ddpm_lightning.cli import run
from ddpm_lightning.quality import FIDSettings
from ddpm_lightning.sampling import SamplingSettings
from ddpm_lightning.sampling.prediction import PredictionSettings
from ddpm_lightning.sampling.progress import sampling_progress
from ddpm_lightning.utils.images import image_grid, to_uint8

from .conftest import TINY_UNET
from .test_latents import save_tiny_autoencoder

NUM_IMAGES, SAMPLER, STEPS = 6, "ddim", 2


class RecordingFeatures(nn.Module):
    """Channel means as features; keeps every uint8 image it is shown."""

    num_features = 3

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen.append(images.cpu())
        return images.float().mean(dim=(2, 3))


class RecordGeneratedForFID(FIDCallback):
    """Saves the generated images this rank's FID extracted (those after the real ones)."""

    def __init__(self, folder: Path, **kwargs) -> None:
        super().__init__(**kwargs)
        self.folder = folder

    def on_fit_start(self, trainer, pl_module) -> None:
        super().on_fit_start(trainer, pl_module)
        self.real_batches = len(self.feature_extractor.seen)

    def on_train_end(self, trainer, pl_module) -> None:
        generated = self.feature_extractor.seen[self.real_batches :]
        shape = (0, 3, 16, 16)
        images = torch.cat(generated) if generated else torch.empty(shape, dtype=torch.uint8)
        torch.save(images, self.folder / f"fid-rank{trainer.global_rank}.pt")


def pixels(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


def assert_same_pixels(actual: torch.Tensor, expected: torch.Tensor) -> None:
    # Equal up to a rounding step: other batch sizes may change a float's last bit.
    assert actual.shape == expected.shape
    assert (actual.int() - expected.int()).abs().max() <= 1


@pytest.fixture(scope="module", params=["pixels", "latents"])
def module(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> DDPMModule:
    # learning_rate 0: training keeps the initial weights, so every path samples one model.
    settings = {"image_size": 16, **TINY_UNET, "learning_rate": 0.0, "lr_warmup_steps": 1}
    if request.param == "latents":  # images are vae.decode of the generated latents
        settings["autoencoder"] = str(save_tiny_autoencoder(tmp_path_factory.mktemp("vae")))
    return DDPMModule(**settings)


@pytest.fixture(scope="module")
def reference(module: DDPMModule) -> torch.Tensor:
    """The images of seeds 0..5 from one batch in one process."""
    generator = module.image_generator(SamplingSettings(SAMPLER, STEPS))
    return to_uint8(generator(list(range(NUM_IMAGES))))


@pytest.mark.parametrize("devices", [1, 2])
def test_grid_fid_and_predict_give_the_same_images_on_any_number_of_processes(
    devices: int, module: DDPMModule, reference: torch.Tensor, tmp_path: Path, image_folder: Path
) -> None:
    strategy = "ddp_fork" if devices > 1 else "auto"
    grid = SampleGridCallback(str(tmp_path), 1, NUM_IMAGES, SamplingSettings(SAMPLER, STEPS))
    # batch_size 4: 6 images over 2 ranks: 3 each; on one process batches of 4 and 2
    fid_sampling = SamplingSettings(SAMPLER, STEPS, batch_size=4)
    fid = RecordGeneratedForFID(
        tmp_path,
        settings=FIDSettings(
            num_images=NUM_IMAGES, sampling=fid_sampling, cache_dir=None, kid_subset_size=2
        ),
        feature_extractor=RecordingFeatures(),
    )
    common = {"accelerator": "cpu", "devices": devices, "strategy": strategy, "logger": False}
    common |= {"enable_progress_bar": False, "enable_model_summary": False}
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        enable_checkpointing=False,
        callbacks=[grid, fid],
        **common,
    )
    data = ImageDataModule(data_dir=str(image_folder), image_size=16, train_batch_size=2)
    trainer.fit(module, data)

    expected_grid = image_grid(reference.float() / 255, cols=3)
    assert_same_pixels(pixels(tmp_path / "samples" / "0000.png"), to_uint8(expected_grid))
    shares = [torch.load(tmp_path / f"fid-rank{rank}.pt") for rank in range(devices)]
    assert [len(share) for share in shares] == [NUM_IMAGES // devices] * devices
    assert_same_pixels(torch.cat(shares), reference)

    predict_sampling = SamplingSettings(SAMPLER, STEPS, batch_size=4)
    module.prediction = PredictionSettings(num_images=NUM_IMAGES, sampling=predict_sampling)
    writer = PNGPredictionWriter(str(tmp_path / "predictions"))
    L.Trainer(callbacks=[writer], **common).predict(module, return_predictions=False)
    predicted = sorted((tmp_path / "predictions").glob("*.png"))
    assert [path.name for path in predicted] == [f"{i:05d}.png" for i in range(NUM_IMAGES)]
    assert_same_pixels(torch.stack([pixels(path) for path in predicted]), reference)


def test_the_sample_command_gives_the_same_images(
    module: DDPMModule, reference: torch.Tensor, tmp_path: Path
) -> None:
    module.save_pretrained(tmp_path / "pipeline")
    out = tmp_path / "sampled"
    args = ["--num_images", str(NUM_IMAGES), "--sampler", SAMPLER, "--num_inference_steps", "2"]
    run(["sample", "--source", str(tmp_path / "pipeline"), "--output_dir", str(out), *args,
         "--batch_size", "4", "--device", "cpu"])  # fmt: skip
    sampled = torch.stack([pixels(out / f"{i:05d}.png") for i in range(NUM_IMAGES)])
    assert_same_pixels(sampled, reference)


def test_progress_counts_steps_times_batches_only_on_a_terminal(
    module: DDPMModule, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    bars = []
    monkeypatch.setattr("ddpm_lightning.sampling.progress.DELAY_SECONDS", 0.0)
    for stdout in (Terminal(), io.StringIO()):
        monkeypatch.setattr("sys.stdout", stdout)
        generator = module.image_generator(SamplingSettings(SAMPLER, STEPS, batch_size=2))
        with sampling_progress(3 * STEPS, "probe") as bar:
            bars.append(bar.total)
        generator(list(range(5)))  # 3 batches of 2 steps
        bars.append(stdout.getvalue())
    terminal_bar, terminal_output, pipe_bar, pipe_output = bars
    assert terminal_bar == 6
    assert "Sampling:" in terminal_output and "/6 " in terminal_output  # 3 batches x 2 steps
    assert pipe_bar == 6 and pipe_output == ""


def test_no_progress_bar_when_the_trainers_is_off(module: DDPMModule) -> None:
    trainer = L.Trainer(enable_progress_bar=False, logger=False)
    with sampling_progress(10, "probe", trainer) as bar:
        assert bar is None
