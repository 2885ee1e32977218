"""Shared fixtures: tiny generated images and tiny UNets, sized for two CPU cores."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# The Hub cannot be reached from the test machines; fail fast instead of waiting on timeouts,
# and keep every datasets cache inside the test session.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

BUTTERFLIES_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "butterflies"

#: A UNet small enough to train for a few steps in well under a second on a CPU.
TINY_UNET = {
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "norm_num_groups": 8,
}


@pytest.fixture(autouse=True, scope="session")
def _one_thread_per_process() -> None:
    # Tiny UNets gain nothing from intra-op threads, and DDP tests run two processes on two
    # cores: one thread each avoids oversubscription (3-8 s per step instead of 0.2 s).
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _isolated_hf_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = tmp_path_factory.mktemp("hf_cache")
    os.environ["HF_DATASETS_CACHE"] = str(cache / "datasets")
    import datasets.config

    datasets.config.HF_DATASETS_CACHE = Path(os.environ["HF_DATASETS_CACHE"])


def write_images(
    folder: Path, count: int, seed: int = 0, sizes: tuple = ((40, 30), (24, 50))
) -> Path:
    """Write ``count`` random RGB PNGs of the given (odd) sizes into ``folder``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        width, height = sizes[index % len(sizes)]
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"image_{index:03d}.png")
    return folder


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Twelve random RGB PNGs of two odd sizes."""
    return write_images(tmp_path / "images", 12)


@pytest.fixture
def tiny_model_kwargs() -> dict:
    """DDPMModule arguments for a tiny 16 px UNet."""
    return {"image_size": 16, **TINY_UNET, "lr_warmup_steps": 2}


def quiet_trainer(**kwargs):
    """A Trainer without logger, checkpoints, progress bar or model summary (plus ``kwargs``)."""
    import lightning as L

    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    return L.Trainer(**{**quiet, "enable_model_summary": False, **kwargs})


def few_steps(sampler: str = "ddim", steps: int = 2, **overrides):
    """``SamplingSettings`` for tests: a fast sampler with a handful of steps."""
    from ddpm_lightning.sampling import SamplingSettings

    return SamplingSettings(sampler, steps, **overrides)


def every_epoch_outputs(output_dir: Path, **overrides):
    """``TrainingOutputs`` that sample a 4-image grid, export and checkpoint at every epoch."""
    from ddpm_lightning.training_outputs import TrainingOutputs

    settings = {
        "output_dir": str(output_dir),
        "save_image_epochs": 1,
        "save_model_epochs": 1,
        "eval_batch_size": 4,
        "sampling": few_steps(),
        "throughput_window": 2,
        **overrides,
    }
    return TrainingOutputs(**settings)


def fit_tiny(
    run_dir: Path,
    image_folder: Path,
    callbacks: list,
    *,
    ckpt_path: str | None = None,
    train_batch_size: int = 4,
    outputs: dict | None = None,
    data: dict | None = None,
    model: dict | None = None,
    **trainer_kwargs,
):
    """Train the tiny UNet on ``image_folder`` with EMA, grids, exports and checkpoints every
    epoch into ``run_dir`` (``outputs`` overrides ``every_epoch_outputs``, ``data`` and
    ``model`` add ``ImageDataModule`` and ``DDPMModule`` arguments); the Trainer."""
    import lightning as L

    from ddpm_lightning import DDPMModule, ImageDataModule

    training_outputs = every_epoch_outputs(run_dir, **{"use_ema": True, **(outputs or {})})
    trainer = L.Trainer(
        callbacks=[*training_outputs.callbacks(), *callbacks],
        plugins=training_outputs.plugins(trainer_kwargs.pop("plugins", None)),
        logger=training_outputs.logger(),
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(
        DDPMModule(image_size=16, **TINY_UNET, lr_warmup_steps=1, **(model or {})),
        ImageDataModule(
            data_dir=str(image_folder),
            image_size=16,
            train_batch_size=train_batch_size,
            **(data or {}),
        ),
        ckpt_path=ckpt_path,
    )
    return trainer


def assert_exact_resume(tmp_path: Path, image_folder: Path, **fit_kwargs) -> Path:
    """Fit 2 epochs straight, and 1 epoch then ``--ckpt_path last``: the same UNet weights.

    ``fit_kwargs`` go to :func:`fit_tiny`; returns the resumed run's folder.
    """
    import lightning as L
    import torch

    class StopAfterFirstEpoch(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            trainer.should_stop = True

    def fit(run: Path, callbacks: list, ckpt_path: str | None = None) -> dict:
        L.seed_everything(0)
        trainer = fit_tiny(
            run, image_folder, callbacks, ckpt_path=ckpt_path, max_epochs=2, **fit_kwargs
        )
        return {k: v.clone() for k, v in trainer.lightning_module.unet.state_dict().items()}

    straight = fit(tmp_path / "straight", [])
    fit(tmp_path / "resumed", [StopAfterFirstEpoch()])
    resumed = fit(tmp_path / "resumed", [], ckpt_path="last")
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)
    return tmp_path / "resumed"
