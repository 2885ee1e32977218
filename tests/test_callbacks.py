from __future__ import annotations

import hashlib
from pathlib import Path
from unittest import mock

import lightning as L
import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline
from huggingface_hub import HfApi
from PIL import Image

from ddpm_lightning import DDPMModule, ImageDataModule
from ddpm_lightning.callbacks import (
    PipelineExportCallback,
    PNGPredictionWriter,
    PushToHubCallback,
    SampleGridCallback,
)
from ddpm_lightning.callbacks.push_to_hub import HubPushError
from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.formulations import EDMFormulation
from ddpm_lightning.sampling import SamplingSettings
from ddpm_lightning.sampling.prediction import PredictionSettings
from ddpm_lightning.training_outputs import TrainingOutputs

from .conftest import TINY_UNET

#: What the grids sample with: the tutorial's DDPM sampler, in 2 steps.
TWO_DDPM_STEPS = SamplingSettings("ddpm", 2)


def tiny_run(
    tmp_path: Path,
    image_folder: Path,
    max_epochs: int = 2,
    extra_callbacks: list | None = None,
    ckpt_path: str | None = None,
    **output_kwargs,
) -> tuple[L.Trainer, DDPMModule, TrainingOutputs]:
    """Fit a tiny model with every output callback firing at every epoch."""
    L.seed_everything(0)
    settings = {
        "output_dir": str(tmp_path / "run"),
        "save_image_epochs": 1,
        "save_model_epochs": 1,
        "eval_batch_size": 4,
        "sampling": TWO_DDPM_STEPS,
        "throughput_window": 2,
        **output_kwargs,
    }
    outputs = TrainingOutputs(**settings)
    datamodule = ImageDataModule(data_dir=str(image_folder), image_size=16, train_batch_size=4)
    module = DDPMModule(image_size=16, **TINY_UNET, lr_warmup_steps=1)
    trainer = L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        callbacks=[*outputs.callbacks(), *(extra_callbacks or [])],
        plugins=outputs.plugins(),
        logger=outputs.logger(),
        log_every_n_steps=1,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    trainer.fit(module, datamodule, ckpt_path=ckpt_path)
    return trainer, module, outputs


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_epochs_write_grids_pipeline_checkpoint_and_logs(
    tmp_path: Path, image_folder: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tiny_run(tmp_path, image_folder)
    run = tmp_path / "run"
    for epoch in (0, 1):
        grid = Image.open(run / "samples" / f"{epoch:04d}.png")
        assert grid.size == (32, 32)  # 4 images of 16 px in a 2 x 2 grid
    pipeline = DDPMPipeline.from_pretrained(run)
    assert pipeline.unet.config.sample_size == 16
    assert (run / "checkpoints" / "last.ckpt").is_file()
    events = EventAccumulator(
        str(next((run / "logs").glob("version_*"))), size_guidance={"images": 0}
    )
    events.Reload()
    tags = events.Tags()
    assert "samples" in tags["images"]
    assert len(events.Images("samples")) == 2
    assert "train/loss" in tags["scalars"]
    assert any(tag.startswith("lr-") for tag in tags["scalars"])
    assert any("samples_per_sec" in tag for tag in tags["scalars"])


def test_grid_and_export_are_identical_for_two_runs_with_the_same_seed(
    tmp_path: Path, image_folder: Path
) -> None:
    tiny_run(tmp_path / "a", image_folder, max_epochs=1)
    tiny_run(tmp_path / "b", image_folder, max_epochs=1)
    for relative in ("samples/0000.png", "unet/diffusion_pytorch_model.safetensors"):
        assert file_digest(tmp_path / "a" / "run" / relative) == file_digest(
            tmp_path / "b" / "run" / relative
        )


def test_grid_uses_the_ema_weights_and_leaves_training_untouched(
    tmp_path: Path, image_folder: Path
) -> None:
    trainer, module, _ = tiny_run(tmp_path, image_folder, max_epochs=1, use_ema=True)
    # After fit, Lightning leaves the EMA weights in the module: the grid must match them.
    grid_callback = next(cb for cb in trainer.callbacks if isinstance(cb, SampleGridCallback))
    expected = module.image_generator(TWO_DDPM_STEPS)([0, 1, 2, 3])
    grid = np.asarray(Image.open(grid_callback.grid_path(0)), dtype=np.float32) / 255
    top_left = torch.from_numpy(grid[:16, :16]).permute(2, 0, 1)
    assert torch.allclose(top_left, expected[0], atol=1 / 255 + 1e-4)
    assert module.unet.training  # train mode restored


def test_sampling_leaves_the_global_rng_alone(tmp_path: Path, image_folder: Path) -> None:
    class RecordRng(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            self.state = torch.get_rng_state()

    before, after = RecordRng(), RecordRng()
    grid = SampleGridCallback(
        str(tmp_path / "run"), save_image_epochs=1, eval_batch_size=4, sampling=TWO_DDPM_STEPS
    )
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        callbacks=[before, grid, after],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(
        DDPMModule(image_size=16, **TINY_UNET, lr_warmup_steps=1),
        ImageDataModule(data_dir=str(image_folder), image_size=16, train_batch_size=4),
    )
    assert grid.grid_path(0).is_file()
    assert torch.equal(before.state, after.state)


def test_interrupted_export_leaves_the_previous_pipeline_intact(
    tmp_path: Path, image_folder: Path
) -> None:
    tiny_run(tmp_path, image_folder, max_epochs=1)
    run = tmp_path / "run"
    weights = run / "unet" / "diffusion_pytorch_model.safetensors"
    before = file_digest(weights)
    module = DDPMModule(image_size=16, **TINY_UNET)  # different (fresh) weights

    def crash_midway(self, save_directory, **kwargs):
        Path(save_directory, "unet").mkdir(parents=True)
        Path(save_directory, "unet", "diffusion_pytorch_model.safetensors").write_bytes(b"partial")
        raise RuntimeError("disk full")

    with (
        mock.patch.object(DDPMPipeline, "save_pretrained", crash_midway),
        pytest.raises(RuntimeError),
    ):
        module.save_pretrained(run, overwrite=True)
    assert file_digest(weights) == before
    assert DDPMPipeline.from_pretrained(run).unet.config.sample_size == 16
    assert not [p for p in run.iterdir() if p.name.startswith(".export")]


def test_an_earlier_runs_outputs_are_not_overwritten_unless_resuming_or_asked(
    tmp_path: Path, image_folder: Path
) -> None:
    tiny_run(tmp_path, image_folder, max_epochs=1)
    with pytest.raises(FileExistsError, match="earlier run"):
        tiny_run(tmp_path, image_folder, max_epochs=1)
    tiny_run(tmp_path, image_folder, max_epochs=1, overwrite_output_dir=True)
    trainer, _, _ = tiny_run(tmp_path, image_folder, max_epochs=2, ckpt_path="last")
    assert trainer.current_epoch == 2
    assert (tmp_path / "run" / "samples" / "0001.png").is_file()


def test_push_to_hub_after_each_export_without_checkpoints(
    tmp_path: Path, image_folder: Path, monkeypatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    uploads: list[dict] = []

    def fake_upload(self, *, repo_id, folder_path, commit_message, **kwargs):
        files = sorted(
            str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file()
        )
        card = Path(folder_path, "README.md").read_text()
        uploads.append(
            {"repo_id": repo_id, "files": files, "message": commit_message, "card": card}
        )

    with (
        mock.patch.object(HfApi, "create_repo") as create_repo,
        mock.patch.object(HfApi, "upload_folder", fake_upload),
    ):
        tiny_run(
            tmp_path,
            image_folder,
            push_to_hub=True,
            hub_model_id="someone/tiny-ddpm",
            hub_private_repo=True,
        )
    create_repo.assert_called_once_with("someone/tiny-ddpm", private=True, exist_ok=True)
    assert [u["message"] for u in uploads] == ["Epoch 0", "Epoch 1"]
    for upload, epoch in zip(uploads, (0, 1)):
        assert upload["repo_id"] == "someone/tiny-ddpm"
        assert not any(name.endswith(".ckpt") for name in upload["files"])
        assert {"model_index.json", "README.md", f"samples/{epoch:04d}.png"} <= set(upload["files"])
        assert any(name.startswith("unet/") for name in upload["files"])
        assert f"samples/{epoch:04d}.png" in upload["card"]
        assert (
            "learning_rate" in upload["card"] and "DDPMPipeline.from_pretrained" in upload["card"]
        )


def test_push_to_hub_fails_fast_without_token(
    tmp_path: Path, image_folder: Path, monkeypatch
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("ddpm_lightning.callbacks.push_to_hub.get_token", lambda: None)
    with (
        mock.patch.object(HfApi, "upload_folder") as upload,
        pytest.raises(HubPushError, match="token"),
    ):
        tiny_run(tmp_path, image_folder, push_to_hub=True, hub_model_id="someone/tiny-ddpm")
    upload.assert_not_called()
    assert not (tmp_path / "run" / "samples").exists()  # stopped before any training


def test_push_to_hub_fails_fast_when_the_repo_cannot_be_created(
    tmp_path: Path, image_folder: Path, monkeypatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    with (
        mock.patch.object(HfApi, "create_repo", side_effect=OSError("403 Forbidden")),
        pytest.raises(HubPushError, match="someone/tiny-ddpm"),
    ):
        tiny_run(tmp_path, image_folder, push_to_hub=True, hub_model_id="someone/tiny-ddpm")
    assert not (tmp_path / "run" / "samples").exists()


def test_push_needs_an_export_callback() -> None:
    trainer = L.Trainer(callbacks=[PushToHubCallback("someone/x")], logger=False)
    with pytest.raises(ValueError, match="PipelineExportCallback"):
        trainer.callbacks[0].setup(trainer, DDPMModule(image_size=16, **TINY_UNET), "fit")


def test_prediction_writer_writes_pngs_and_never_overwrites(tmp_path: Path) -> None:
    module = DDPMModule(image_size=16, **TINY_UNET)
    sampling = SamplingSettings("ddpm", 2, batch_size=2)
    module.prediction = PredictionSettings(num_images=5, sampling=sampling)
    writer = PNGPredictionWriter(output_dir=str(tmp_path / "pred"))
    trainer = L.Trainer(
        accelerator="cpu", callbacks=[writer], logger=False, enable_progress_bar=False
    )
    trainer.predict(module, return_predictions=False)
    files = sorted(p.name for p in (tmp_path / "pred").iterdir())
    assert files == [f"{i:05d}.png" for i in range(5)]
    assert Image.open(tmp_path / "pred" / "00000.png").size == (16, 16)
    trainer = L.Trainer(
        accelerator="cpu",
        callbacks=[PNGPredictionWriter(str(tmp_path / "pred"))],
        logger=False,
        enable_progress_bar=False,
    )
    with pytest.raises(FileExistsError, match="already exists"):
        trainer.predict(module, return_predictions=False)


def test_grid_shape_and_validation() -> None:
    from ddpm_lightning.utils.images import grid_shape

    assert grid_shape(16, None, None) == (4, 4)
    assert grid_shape(6, None, None) == (2, 3)
    assert grid_shape(8, 2, None) == (2, 4)
    with pytest.raises(ValueError):
        grid_shape(16, 2, 2)
    # The grid's sampler is a SamplingSettings one: a typo fails where the settings are made.
    with pytest.raises(InvalidSettingError, match="Unknown sampler"):
        SampleGridCallback(sampling=SamplingSettings(sampler="euler"))
    with pytest.raises(ValueError):
        PipelineExportCallback(save_model_epochs=0)


def test_the_model_card_of_a_conditional_export_names_its_pipeline_and_classes() -> None:
    # Issue 20, bug 2: a conditional export loads only as ClassConditionalDDPMPipeline.
    from types import SimpleNamespace

    from ddpm_lightning.callbacks.push_to_hub import model_card

    def card(**classes) -> str:
        module = DDPMModule(image_size=16, **TINY_UNET, **classes)
        trainer = SimpleNamespace(
            lightning_module=module,
            datamodule=None,
            num_devices=1,
            num_nodes=1,
            accumulate_grad_batches=1,
            precision="32-true",
            callbacks=[],
            global_step=7,
        )
        return model_card("someone/blobs", trainer, 0, None)

    conditional = card(num_classes=2, id2label={0: "blue", 1: "red"})
    assert "`ClassConditionalDDPMPipeline`" in conditional
    assert "DiffusionPipeline.from_pretrained" in conditional
    assert "get_label_ids" in conditional and "`blue`, `red`" in conditional
    assert "unconditional" not in conditional and "DDPMPipeline.from_pretrained" not in (
        conditional.replace("DiffusionPipeline.from_pretrained", "")
    )
    unconditional = card()
    assert "DDPMPipeline.from_pretrained" in unconditional and "unconditional" in unconditional
    assert "ClassConditional" not in unconditional
    # EDM and latent exports load through DiffusionPipeline once ddpm_lightning is imported.
    edm = card(formulation=EDMFormulation())
    assert "`EDMPipeline`" in edm and "import ddpm_lightning.pipelines" in edm
    assert "DDPMPipeline.from_pretrained" not in edm
