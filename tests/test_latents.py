"""Latent diffusion: a tiny local AutoencoderKL through the real loading, caching and export."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from diffusers import AutoencoderKL, DiffusionPipeline

from ddpm_lightning import DDPMModule, ImageDataModule
from ddpm_lightning.data.latent_cache import LatentDataset
from ddpm_lightning.errors import InvalidSettingError, SourceUnavailableError
from ddpm_lightning.models.checkpoint_fit import check_checkpoint_fits
from ddpm_lightning.pipelines import LatentDiffusionPipeline
from ddpm_lightning.pipelines.latent_scaling import LatentScaling
from ddpm_lightning.sampling.denoise import denoise, to_unit_range

from .conftest import TINY_UNET, assert_exact_resume, few_steps, quiet_trainer
from .test_distributed import PerImageNoise


def save_tiny_autoencoder(folder: Path, seed: int = 0, **config) -> Path:
    """A random 2-level AutoencoderKL (16 px images -> 4 x 8 x 8 latents), save_pretrained."""
    torch.manual_seed(seed)
    settings = {
        "block_out_channels": (8, 16),
        "down_block_types": ("DownEncoderBlock2D",) * 2,
        "up_block_types": ("UpDecoderBlock2D",) * 2,
        "latent_channels": 4,
        "norm_num_groups": 4,
        "layers_per_block": 1,
        "sample_size": 16,
        **config,
    }
    AutoencoderKL(**settings).save_pretrained(folder)
    return folder


@pytest.fixture
def autoencoder(tmp_path: Path) -> Path:
    return save_tiny_autoencoder(tmp_path / "vae")


class CountEncodedImages:
    """Counts the images that go through ``AutoencoderKL.encode`` (any instance)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.images = 0
        original = AutoencoderKL.encode

        def counting(vae, x, *args, **kwargs):
            self.images += len(x)
            return original(vae, x, *args, **kwargs)

        monkeypatch.setattr(AutoencoderKL, "encode", counting)


def latent_module(autoencoder: Path, **overrides) -> DDPMModule:
    settings = {"image_size": 16, **TINY_UNET, "lr_warmup_steps": 1, "learning_rate": 1e-3}
    return DDPMModule(**{**settings, **overrides}, autoencoder=str(autoencoder))


def fit(module: DDPMModule, image_folder: Path, epochs: int = 1, **data) -> ImageDataModule:
    datamodule = ImageDataModule(
        data_dir=str(image_folder), image_size=16, train_batch_size=4, **data
    )
    quiet_trainer(max_epochs=epochs).fit(module, datamodule)
    return datamodule


def test_the_unet_follows_the_latent_shape(autoencoder: Path) -> None:
    module = latent_module(autoencoder)
    config = module.unet.config
    assert (config.in_channels, config.out_channels, config.sample_size) == (4, 4, 8)
    assert module.hparams.image_size == 16  # the images' size, not the latents'
    assert module.space.shape == (4, 8, 8)


def test_cached_moments_are_the_encoders_and_a_second_run_reuses_them(
    monkeypatch: pytest.MonkeyPatch, autoencoder: Path, image_folder: Path
) -> None:
    counter = CountEncodedImages(monkeypatch)
    L.seed_everything(0)
    module = latent_module(autoencoder)
    datamodule = fit(module, image_folder)
    # 12 images and their mirror images (random flips are on), encoded once.
    assert counter.images == 24
    cache = datamodule.train_latents
    assert isinstance(cache, LatentDataset) and len(cache) == 12
    batch = cache.__getitems__(list(range(12)))
    assert batch["latent_mean"].shape == (12, 2, 4, 8, 8)

    pixels = ImageDataModule(data_dir=str(image_folder), image_size=16, random_flip=False)
    pixels.setup("fit")
    images = pixels.train_dataset.__getitems__(list(range(12)))["images"].float() / 127.5 - 1
    vae = AutoencoderKL.from_pretrained(autoencoder)
    with torch.no_grad():
        for view, view_images in enumerate((images, images.flip(-1))):
            distribution = vae.encode(view_images).latent_dist
            torch.testing.assert_close(batch["latent_mean"][:, view], distribution.mean)
            torch.testing.assert_close(batch["latent_std"][:, view], distribution.std)

    # A new run on the same images and autoencoder: no encoding at all.
    counter.images = 0
    fit(latent_module(autoencoder), image_folder)
    assert counter.images == 0


def test_another_autoencoder_gets_its_own_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, autoencoder: Path, image_folder: Path
) -> None:
    counter = CountEncodedImages(monkeypatch)
    first = fit(latent_module(autoencoder), image_folder, random_flip=False)
    first_file = first.train_latents.encoded.cache_files[0]["filename"]
    other = save_tiny_autoencoder(tmp_path / "other-vae", seed=1)
    counter.images = 0
    second = fit(latent_module(other), image_folder, random_flip=False)
    assert counter.images == 12  # encoded anew, not read from the first one's cache
    assert second.train_latents.encoded.cache_files[0]["filename"] != first_file
    assert Path(first_file).is_file()  # the first cache is still there, untouched
    # Unflipped training stores one view per image.
    assert second.train_latents[0]["latent_mean"].shape == (1, 4, 8, 8)


def test_generated_images_are_the_decoded_latents_and_the_export_gives_them(
    tmp_path: Path, image_folder: Path
) -> None:
    vae_folder = save_tiny_autoencoder(tmp_path / "vae", scaling_factor=0.5, shift_factor=0.1)
    L.seed_everything(0)
    module = latent_module(vae_folder)
    fit(module, image_folder)
    module.eval()
    images = module.generate(num_images=3, seed=7, num_inference_steps=3, output_type="pt")

    # The same latents by hand, decoded with the scale and shift applied once.
    vae = AutoencoderKL.from_pretrained(vae_folder)
    scheduler = module.formulation.export_scheduler()
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        latents = denoise(module.unet, scheduler, 3, generator, 3)
        expected = to_unit_range(vae.decode(latents / 0.5 + 0.1).sample)
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-6)

    module.save_pretrained(tmp_path / "export")
    pipeline = DiffusionPipeline.from_pretrained(tmp_path / "export")
    assert isinstance(pipeline, LatentDiffusionPipeline)
    assert pipeline.vae.config.scaling_factor == 0.5 and pipeline.vae.config.shift_factor == 0.1
    exported = pipeline(
        batch_size=3,
        generator=torch.Generator().manual_seed(7),
        num_inference_steps=3,
        output_type="pt",
    ).images
    assert torch.equal(exported, images)


def test_a_conditional_latent_export_guides_as_the_module(
    tmp_path: Path, autoencoder: Path
) -> None:
    module = latent_module(autoencoder, num_classes=2, id2label={0: "red", 1: "blue"}).eval()
    images = module.generate(
        seed=3, num_inference_steps=2, sampler="ddim", output_type="pt",
        class_labels=["blue", "red"], guidance_scale=2.0,
    )  # fmt: skip
    module.save_pretrained(tmp_path / "export")
    pipeline = DiffusionPipeline.from_pretrained(tmp_path / "export")
    from diffusers import DDIMScheduler

    pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    exported = pipeline(
        class_labels=pipeline.get_label_ids(["blue", "red"]),
        guidance_scale=2.0,
        generator=torch.Generator().manual_seed(3),
        num_inference_steps=2,
        output_type="pt",
    ).images
    assert torch.equal(exported, images)


def test_grids_and_predictions_are_the_generators_images(
    tmp_path: Path, autoencoder: Path, image_folder: Path
) -> None:
    from ddpm_lightning.callbacks import PNGPredictionWriter
    from ddpm_lightning.sampling.prediction import PredictionSettings
    from ddpm_lightning.sampling.seeds import image_seeds
    from ddpm_lightning.utils.images import to_uint8

    L.seed_everything(0)
    module = latent_module(autoencoder)
    fit(module, image_folder)
    module.prediction = PredictionSettings(num_images=3, sampling=few_steps(seed=5))
    out = tmp_path / "predictions"
    trainer = quiet_trainer(callbacks=[PNGPredictionWriter(str(out))])
    trainer.predict(module, return_predictions=False)
    written = sorted(out.glob("*.png"))
    assert len(written) == 3
    import numpy as np
    from PIL import Image

    predicted = torch.stack([
        torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1) for path in written
    ])  # fmt: skip
    expected = module.image_generator(few_steps(seed=5))(image_seeds(5, 3))
    assert torch.equal(predicted, to_uint8(expected).cpu())


def test_a_latent_run_resumes_exactly(
    tmp_path: Path, autoencoder: Path, image_folder: Path
) -> None:
    run = assert_exact_resume(tmp_path, image_folder, model={"autoencoder": str(autoencoder)})
    assert (run / "model_index.json").is_file()
    assert DiffusionPipeline.from_pretrained(run).vae.config.latent_channels == 4


def test_streaming_encodes_each_batch_on_the_fly(
    monkeypatch: pytest.MonkeyPatch, autoencoder: Path, image_folder: Path
) -> None:
    counter = CountEncodedImages(monkeypatch)
    module = latent_module(autoencoder)
    datamodule = fit(module, image_folder, epochs=2, streaming=True)
    assert not isinstance(datamodule.train_latents, LatentDataset)
    assert counter.images == 24  # 12 images a step's batch at a time, each epoch


def test_estimated_scaling_gives_unit_std_and_is_stored(
    tmp_path: Path, autoencoder: Path, image_folder: Path
) -> None:
    module = latent_module(autoencoder, latent_scaling="estimate")
    datamodule = fit(module, image_folder, random_flip=False)
    means, stds = datamodule.train_latents.moments()
    mean, std = torch.cat(means).double(), torch.cat(stds).double()
    variance = (mean.square() + std.square()).mean() - mean.mean().square()
    scaling = module.hparams.latent_scaling
    assert scaling["scaling_factor"] == pytest.approx(1 / variance.sqrt().item(), rel=1e-9)
    # The checkpoint keeps the values, and the autoencoder as a config: it loads without it.
    trainer = module.trainer
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    for path in Path(autoencoder).iterdir():
        path.unlink()
    loaded = DDPMModule.load_from_checkpoint(tmp_path / "model.ckpt")
    assert loaded.space.scaling == LatentScaling(scaling["scaling_factor"])
    for name, value in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_latents_mean_and_std_scale_per_channel() -> None:
    scaling = LatentScaling(0.5, None, (1.0, 2.0), (2.0, 4.0))
    z = torch.ones(1, 2, 1, 1) * torch.tensor([3.0, 6.0]).view(1, 2, 1, 1)
    scaled = scaling.scale(z)
    torch.testing.assert_close(scaled.flatten(), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(scaling.unscale(scaled), z)


def test_a_latent_checkpoint_refuses_another_autoencoder(
    tmp_path: Path, autoencoder: Path, image_folder: Path
) -> None:
    module = latent_module(autoencoder)
    fit(module, image_folder, random_flip=False)
    module.trainer.save_checkpoint(tmp_path / "model.ckpt")
    checkpoint = torch.load(tmp_path / "model.ckpt", weights_only=False)
    same = latent_module(autoencoder)
    check_checkpoint_fits(checkpoint, "model.ckpt", same.unet, dict(same.hparams), False,
                          same.space.identity)  # fmt: skip
    other = latent_module(save_tiny_autoencoder(tmp_path / "other", seed=1))
    with pytest.raises(InvalidSettingError, match="latents of another autoencoder"):
        check_checkpoint_fits(checkpoint, "model.ckpt", other.unet, dict(other.hparams), False,
                              other.space.identity)  # fmt: skip
    pixels = DDPMModule(image_size=16, **TINY_UNET)
    with pytest.raises(InvalidSettingError, match="trained on latents, this run's model on pixels"):
        check_checkpoint_fits(checkpoint, "model.ckpt", pixels.unet, dict(pixels.hparams), False)


def test_bad_latent_settings_are_clear_errors(tmp_path: Path, autoencoder: Path) -> None:
    with pytest.raises(InvalidSettingError, match="latents have 4 channels at 8 px"):
        latent_module(autoencoder, unet_kwargs={"in_channels": 3, "out_channels": 3})
    with pytest.raises(InvalidSettingError, match="must be a multiple of 2"):
        latent_module(autoencoder, image_size=15)
    with pytest.raises(InvalidSettingError, match="autoencoder takes images with 3 channels"):
        latent_module(autoencoder, channels=1)
    with pytest.raises(SourceUnavailableError, match="Could not load an AutoencoderKL"):
        latent_module(tmp_path / "no-such-vae")
    not_a_model = tmp_path / "images"
    not_a_model.mkdir()
    with pytest.raises(SourceUnavailableError, match="Could not load an AutoencoderKL"):
        latent_module(not_a_model)
    with pytest.raises(InvalidSettingError, match="latent_scaling must be one of"):
        latent_module(autoencoder, latent_scaling="estimated")
    module = latent_module(autoencoder, latent_scaling="estimate")
    with pytest.raises(InvalidSettingError, match="fit the model first"):
        module.generate(num_images=1, num_inference_steps=1)


def test_estimating_the_scale_needs_a_cache(autoencoder: Path, image_folder: Path) -> None:
    module = latent_module(autoencoder, latent_scaling="estimate")
    with pytest.raises(InvalidSettingError, match="needs cached latents"):
        fit(module, image_folder, streaming=True)


class PerImageDraws(PerImageNoise):
    """Latent draws (and noise, timesteps) that depend on each image, not on batches or ranks."""

    def setup(self, stage: str) -> None:
        super().setup(stage)
        encode = self.space.encode

        def per_image(batch, generator):
            draws = []
            for mean, std in zip(batch["latent_mean"], batch["latent_std"]):
                seed = int(mean.double().sum().mul(1000).round().item()) % 2**31
                one = {"latent_mean": mean[None], "latent_std": std[None]}
                draws.append(encode(one, torch.Generator().manual_seed(seed)))
            return torch.cat(draws)

        self.space.encode = per_image


class RecordEncodings(L.Callback):
    """Each rank's encoded-image count and final UNet weights, for the parent test process."""

    def __init__(self, folder: Path, counter: CountEncodedImages) -> None:
        self.folder, self.counter = folder, counter

    def on_train_end(self, trainer, pl_module) -> None:
        state = {k: v.detach().clone() for k, v in pl_module.unet.state_dict().items()}
        record = {"encoded": self.counter.images, "state": state}
        torch.save(record, self.folder / f"rank{trainer.global_rank}.pt")


def test_two_process_ddp_encodes_each_image_once_and_trains_as_one_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, autoencoder: Path, image_folder: Path
) -> None:
    counter = CountEncodedImages(monkeypatch)

    def train(devices: int, batch_size: int, folder: Path) -> None:
        folder.mkdir()
        L.seed_everything(0)
        trainer = quiet_trainer(
            accelerator="cpu",
            devices=devices,
            strategy="ddp_fork" if devices > 1 else "auto",
            max_epochs=2,
            callbacks=[RecordEncodings(folder, counter)],
        )
        module = PerImageDraws(
            image_size=16, **TINY_UNET, lr_warmup_steps=1, learning_rate=1e-3,
            autoencoder=str(autoencoder),
        )  # fmt: skip
        data = ImageDataModule(
            data_dir=str(image_folder),
            image_size=16,
            train_batch_size=batch_size,
            random_flip=False,
            cache_dir=str(folder / "cache"),  # each run encodes anew
        )
        trainer.fit(module, data)

    train(2, 4, tmp_path / "ddp")
    ranks = [torch.load(tmp_path / "ddp" / f"rank{rank}.pt") for rank in (0, 1)]
    assert ranks[0]["encoded"] + ranks[1]["encoded"] == 12  # once in all
    train(1, 8, tmp_path / "single")
    single = torch.load(tmp_path / "single" / "rank0.pt")
    assert single["encoded"] == 12
    for name, value in single["state"].items():
        torch.testing.assert_close(ranks[0]["state"][name], value, rtol=0, atol=1e-4)
        assert torch.equal(ranks[1]["state"][name], ranks[0]["state"][name]), name


def train_latents_in(precision: str, accelerator: str, tmp_path: Path, image_folder: Path) -> None:
    """Two epochs with grids and an export at ``precision``: everything finite, grids not flat."""
    import numpy as np
    from PIL import Image

    from .conftest import fit_tiny

    vae = save_tiny_autoencoder(tmp_path / "vae")
    fit_tiny(
        tmp_path / "run",
        image_folder,
        [],
        outputs={"sampling": few_steps()},
        model={"autoencoder": str(vae)},
        max_epochs=2,
        accelerator=accelerator,
        devices=1,
        precision=precision,
    )
    for epoch in (0, 1):
        grid = np.asarray(Image.open(tmp_path / "run" / "samples" / f"{epoch:04d}.png"))
        assert grid.std() > 0
    pipeline = DiffusionPipeline.from_pretrained(tmp_path / "run")
    assert isinstance(pipeline, LatentDiffusionPipeline)
    device = "cuda" if accelerator == "gpu" else "cpu"
    images = pipeline.to(device)(
        batch_size=2, num_inference_steps=3, output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).images  # fmt: skip
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["32-true", "16-mixed", "bf16-mixed"])
def test_latent_training_on_gpu(tmp_path: Path, image_folder: Path, precision: str) -> None:
    if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    train_latents_in(precision, "gpu", tmp_path, image_folder)


@pytest.mark.slow
def test_latent_training_in_bf16_on_cpu(tmp_path: Path, image_folder: Path) -> None:
    train_latents_in("bf16-mixed", "cpu", tmp_path, image_folder)


def test_held_out_images_validate_on_their_own_cached_latents(
    autoencoder: Path, image_folder: Path
) -> None:
    module = latent_module(autoencoder)
    datamodule = fit(module, image_folder, val_fraction=0.5)
    assert len(datamodule.train_latents) == len(datamodule.val_latents) == 6
    train_files = datamodule.train_latents.encoded.cache_files
    assert train_files != datamodule.val_latents.encoded.cache_files
    assert torch.isfinite(module.trainer.callback_metrics["val/loss"])


def test_a_rank_without_seeds_returns_images_of_the_image_shape(autoencoder: Path) -> None:
    # all_gather pads each rank's images to one shape: latents' would not match the images'.
    generator = latent_module(autoencoder).image_generator(few_steps())
    assert generator([]).shape == (0, 3, 16, 16)
