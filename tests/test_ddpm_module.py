"""DDPMModule: training objective, EMA, export, sampling, resume, fine-tuning and errors."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMPipeline
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader

from ddpm_lightning import DDPMModule, ImageDataModule
from ddpm_lightning.callbacks import SpeedSwitches
from ddpm_lightning.callbacks.ema import EMA, ema_decay
from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.formulations import DDPMFormulation
from ddpm_lightning.formulations import ddpm as ddpm_formulation_source
from ddpm_lightning.formulations.ddpm_targets import training_target
from ddpm_lightning.sampling import DDPM_SAMPLERS, SamplingSettings
from ddpm_lightning.sampling.prediction import PredictionSettings
from ddpm_lightning.utils.averaged_weights import averaged_weights
from ddpm_lightning.utils.images import to_uint8

from .conftest import TINY_UNET, write_images

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
#: The steps every test samples with (the old tiny models' module default, with DDPM).
STEPS = 3


# ---------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """A 16 px UNet gains nothing from a second thread, and loses much when the other core is
    busy (OpenMP threads wait on each other): on two shared cores one thread is several times
    faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_trainer(**overrides) -> L.Trainer:
    options = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**{**options, **overrides})


def fixed_images(count: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, channels, 16, 16, generator=generator) * 2 - 1


def image_loader(images: torch.Tensor, batch_size: int) -> DataLoader:
    """Batches shaped like the ones the Trainer hands the module: {"images": float [-1, 1]}."""
    return DataLoader([{"images": image} for image in images], batch_size=batch_size)


def unet_params(module: DDPMModule) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.unet.named_parameters()}


def all_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> bool:
    assert a.keys() == b.keys()
    return all(torch.allclose(a[name], b[name], rtol=0, atol=atol) for name in a)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[name] - b[name]).abs().max().item() for name in a)


def unet_part(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("unet.") :]: v for k, v in state_dict.items() if k.startswith("unet.")}


def v_prediction_beta_end_003() -> DDPMFormulation:
    return DDPMFormulation(beta_end=0.03, prediction_type="v_prediction")


def noised(module: DDPMModule, clean, noise, timesteps) -> torch.Tensor:
    """The forward process written out: sqrt(a_t) x0 + sqrt(1 - a_t) eps."""
    alpha = module.noise_scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    return alpha.sqrt() * clean + (1 - alpha).sqrt() * noise


def expected_target(module: DDPMModule, kind: str, clean, noise, timesteps) -> torch.Tensor:
    """Each prediction type's target written out (v = sqrt(a_t) eps - sqrt(1 - a_t) x0)."""
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return clean
    alpha = module.noise_scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    return alpha.sqrt() * noise - (1 - alpha).sqrt() * clean


class LossRecorder(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].item())


# ---------------------------------------------------------------------- 1. the loss falls
def test_loss_falls_over_a_few_dozen_cpu_steps(tiny_model_kwargs: dict) -> None:
    L.seed_everything(0)
    images = fixed_images(8)
    module = DDPMModule(**{**tiny_model_kwargs, "learning_rate": 1e-3, "lr_scheduler": "constant"})
    generator = torch.Generator().manual_seed(1)
    probe = images.repeat(4, 1, 1, 1)
    probe_noise = torch.randn(probe.shape, generator=generator)
    probe_timesteps = torch.randint(0, 1000, (len(probe),), generator=generator)
    with torch.no_grad():
        before = module.diffusion_loss(probe, probe_noise, probe_timesteps).item()

    recorder = LossRecorder()
    make_trainer(max_steps=30, callbacks=[recorder]).fit(module, image_loader(images, 4))

    with torch.no_grad():
        after = module.diffusion_loss(probe, probe_noise, probe_timesteps).item()
    assert len(recorder.losses) == 30
    assert after < 0.5 * before, (before, after)
    assert np.mean(recorder.losses[-5:]) < np.mean(recorder.losses[:5])


class FixedNoise(DDPMModule):
    """Draws each step's noise and timesteps from a list, so a plain loop can use the same."""

    def __init__(self, draws: list[tuple[torch.Tensor, torch.Tensor]], **kwargs) -> None:
        super().__init__(**kwargs)
        self.draws = draws

    def sample_noise(self, images, batch_idx, generator=None):
        return self.draws[self.global_step]


def test_trainer_fit_ends_with_the_tutorial_loops_weights(tiny_model_kwargs: dict) -> None:
    # Lightning's own parity standard: the same final weights as the plain PyTorch loop. The
    # loop is the tutorial's, line for line (AdamW, cosine warm-up, clip 1.0, step, zero_grad).
    from diffusers.optimization import get_cosine_schedule_with_warmup

    steps, images = 6, fixed_images(12)
    generator = torch.Generator().manual_seed(3)
    draws = [
        (
            torch.randn(2, 3, 16, 16, generator=generator),
            torch.randint(0, 1000, (2,), generator=generator),
        )
        for _ in range(steps)
    ]
    settings = {**tiny_model_kwargs, "learning_rate": 1e-3, "lr_warmup_steps": 2}
    L.seed_everything(0)
    module = FixedNoise(draws, **settings)
    unet = DDPMModule(**settings).unet
    unet.load_state_dict(module.unet.state_dict())  # the same initial weights
    initial = unet_params(module)
    make_trainer(max_epochs=1).fit(module, image_loader(images, 2))

    scheduler = module.noise_scheduler
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    lr_schedule = get_cosine_schedule_with_warmup(optimizer, 2, steps)
    for step, clean in enumerate(images.split(2)):
        noise, timesteps = draws[step]
        noisy = scheduler.add_noise(clean, noise, timesteps)
        loss = F.mse_loss(unet(noisy, timesteps, return_dict=False)[0], noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad()

    assert module.global_step == steps
    loop_weights = {name: p.detach() for name, p in unet.named_parameters()}
    assert max_difference(loop_weights, initial) > 1e-3  # trained: not trivially equal
    assert max_difference(unet_params(module), loop_weights) < 1e-6


# ---------------------------------------------------------------------- 2. objectives
@pytest.mark.parametrize("kind", PREDICTION_TYPES)
def test_target_and_loss_follow_the_prediction_type(kind: str, tiny_model_kwargs: dict) -> None:
    module = DDPMModule(**tiny_model_kwargs, formulation=DDPMFormulation(prediction_type=kind))
    clean, noise = fixed_images(3, seed=1), fixed_images(3, seed=2)
    timesteps = torch.tensor([0, 500, 999])
    expected = expected_target(module, kind, clean, noise, timesteps)

    target = training_target(module.noise_scheduler, clean, noise, timesteps, kind)
    assert torch.allclose(target, expected, atol=1e-6)
    if kind == "v_prediction":
        velocity = module.noise_scheduler.get_velocity(clean, noise, timesteps)
        assert torch.allclose(target, velocity, atol=1e-6)
        assert not torch.allclose(target, noise, atol=1e-2)

    with torch.no_grad():
        loss = module.diffusion_loss(clean, noise, timesteps)
        prediction = module.unet(noised(module, clean, noise, timesteps), timesteps).sample
    assert torch.allclose(loss, F.mse_loss(prediction, expected), atol=1e-6)


@pytest.mark.parametrize("kind", PREDICTION_TYPES)
def test_each_prediction_type_trains_on_its_target(
    kind: str, tiny_model_kwargs: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def spy(scheduler, clean, noise, timesteps, prediction_type):
        target = training_target(scheduler, clean, noise, timesteps, prediction_type)
        calls.append((clean, noise, timesteps, prediction_type, target))
        return target

    monkeypatch.setattr(ddpm_formulation_source, "training_target", spy)
    L.seed_everything(0)
    formulation = DDPMFormulation(prediction_type=kind)
    module = DDPMModule(**tiny_model_kwargs, formulation=formulation, learning_rate=1e-3)
    start = unet_params(module)
    recorder = LossRecorder()
    make_trainer(max_steps=3, callbacks=[recorder]).fit(module, image_loader(fixed_images(4), 2))

    assert len(calls) == 3 and all(call[3] == kind for call in calls)
    for clean, noise, timesteps, _, target in calls:
        assert torch.allclose(target, expected_target(module, kind, clean, noise, timesteps))
    assert len(recorder.losses) == 3 and all(math.isfinite(loss) for loss in recorder.losses)
    # The first step runs at LR 0 (linear warm-up from 0, as in diffusers); later ones move.
    assert max_difference(unet_params(module), start) > 1e-5


@pytest.mark.parametrize("kind", PREDICTION_TYPES)
def test_min_snr_weighting(kind: str, tiny_model_kwargs: dict) -> None:
    gamma = 5.0
    formulation = DDPMFormulation(prediction_type=kind, min_snr_gamma=gamma)
    module = DDPMModule(**tiny_model_kwargs, formulation=formulation)
    clean, noise = fixed_images(4, seed=1), fixed_images(4, seed=2)
    timesteps = torch.tensor([1, 20, 300, 900])  # SNR from far above gamma to far below
    with torch.no_grad():
        weighted = module.diffusion_loss(clean, noise, timesteps)
        prediction = module.unet(noised(module, clean, noise, timesteps), timesteps).sample
    target = expected_target(module, kind, clean, noise, timesteps)
    per_image = ((prediction - target) ** 2).mean(dim=(1, 2, 3))
    alpha = module.noise_scheduler.alphas_cumprod[timesteps]
    snr = alpha / (1 - alpha)
    clipped = torch.minimum(snr, torch.tensor(gamma))
    weights = {"epsilon": clipped / snr, "sample": clipped, "v_prediction": clipped / (snr + 1)}
    assert torch.isfinite(weighted)
    assert torch.allclose(weighted, (per_image * weights[kind]).mean(), rtol=1e-5)
    assert not torch.allclose(weighted, per_image.mean(), rtol=1e-2)


# ---------------------------------------------------------------------- 3. EMA
def test_ema_decay_warmup_formula() -> None:
    for step in (0, 1, 2, 10, 1000):
        expected = 1 - (1 + step / 1.0) ** -0.75
        assert ema_decay(step, 0.9999, True, 1.0, 0.75) == pytest.approx(expected)
    assert ema_decay(0, 0.9999, True, 1.0, 0.75) == 0.0
    assert ema_decay(10**9, 0.9999, True, 1.0, 0.75) == 0.9999  # capped
    assert ema_decay(5, 0.9, True, 2.0, 2 / 3) == pytest.approx(1 - (1 + 5 / 2.0) ** (-2 / 3))
    assert ema_decay(1, 0.9999, False, 1.0, 0.75) == 0.9999
    assert EMA(decay=0.99).current_decay(3) == pytest.approx(1 - 4**-0.75)
    with pytest.raises(ValueError, match="decay"):
        EMA(decay=1.0)


class WeightsRecorder(Callback):
    """What a sampling or export callback sees: the raw weights after each step, and the
    weights inside ``averaged_weights`` at validation end and at train-epoch end."""

    def __init__(self) -> None:
        self.raw_after_step: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.raw_after_step.append(unet_params(pl_module))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        with averaged_weights(trainer, pl_module) as swapped:
            self.at_validation = (swapped, unet_params(pl_module))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        with averaged_weights(trainer, pl_module) as swapped:
            self.at_epoch_end = (swapped, unet_params(pl_module))
            self.images = pl_module.generate(2, seed=3, num_inference_steps=STEPS, output_type="pt")
        self.after_context = unet_params(pl_module)


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Two optimizer steps with EMA, a validation and a checkpoint at the end of the epoch."""
    folder = tmp_path_factory.mktemp("ema_run")
    L.seed_everything(0)
    module = DDPMModule(
        image_size=16,
        **TINY_UNET,
        learning_rate=1e-3,
        lr_scheduler="constant",
    )
    ema = EMA(decay=0.9999)
    recorder = WeightsRecorder()
    checkpoint = ModelCheckpoint(dirpath=folder / "ckpt", save_last=True)
    # The recorder comes first: its validation hook runs while Lightning has the EMA swapped in.
    trainer = make_trainer(
        max_epochs=1,
        callbacks=[recorder, ema, checkpoint],
        enable_checkpointing=True,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, image_loader(fixed_images(4), 2), image_loader(fixed_images(2, seed=5), 2))
    return SimpleNamespace(
        trainer=trainer,
        module=module,
        ema=ema,
        recorder=recorder,
        folder=folder,
        ema_params=unet_params(ema._average_model.module),
        last=folder / "ckpt" / "last.ckpt",
    )


def test_ema_after_two_updates_is_the_closed_form_lerp(ema_run: SimpleNamespace) -> None:
    first, second = ema_run.recorder.raw_after_step
    decay = 1 - (1 + 1 / 1.0) ** -0.75  # the first update copies; the second uses step 1
    expected = {name: decay * first[name] + (1 - decay) * second[name] for name in first}
    assert int(ema_run.ema._average_model.n_averaged) == 2
    assert all_close(ema_run.ema_params, expected, atol=1e-6)
    assert max_difference(ema_run.ema_params, second) > 1e-4  # EMA differs from the raw weights


def test_sampling_and_export_use_the_ema_weights(ema_run: SimpleNamespace, tmp_path: Path) -> None:
    raw = ema_run.recorder.raw_after_step[-1]
    swapped, inside = ema_run.recorder.at_epoch_end
    assert swapped and all_close(inside, ema_run.ema_params)
    assert all_close(ema_run.recorder.after_context, raw)  # swapped back afterwards
    # Validation already holds the EMA weights: averaged_weights must not swap them out again.
    swapped, inside = ema_run.recorder.at_validation
    assert swapped and all_close(inside, ema_run.ema_params)
    # After fit Lightning copies the average into the module; generate and export use it.
    assert all_close(unet_params(ema_run.module), ema_run.ema_params)
    images = ema_run.module.generate(2, seed=3, num_inference_steps=STEPS, output_type="pt")
    assert torch.equal(images, ema_run.recorder.images)
    raw_module = DDPMModule(image_size=16, **TINY_UNET)
    raw_module.unet.load_state_dict(raw)
    raw_images = raw_module.generate(2, seed=3, num_inference_steps=STEPS, output_type="pt")
    assert not torch.allclose(raw_images, images, atol=1e-4)
    ema_run.module.save_pretrained(tmp_path / "export")
    exported = DDPMPipeline.from_pretrained(tmp_path / "export").unet
    assert all_close({n: p.detach() for n, p in exported.named_parameters()}, ema_run.ema_params)


def test_checkpoint_holds_ema_weights_and_the_raw_ones_apart(ema_run: SimpleNamespace) -> None:
    loaded = DDPMModule.load_from_checkpoint(ema_run.last)
    assert all_close(unet_params(loaded), ema_run.ema_params)
    checkpoint = torch.load(ema_run.last, weights_only=False)
    current = unet_part(checkpoint["current_model_state"])
    assert all_close(current, ema_run.recorder.raw_after_step[-1])
    assert checkpoint["global_step"] == 2


# ---------------------------------------------------------------------- 4. export
def test_export_round_trip_gives_the_pipelines_images(
    tiny_model_kwargs: dict, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    module = DDPMModule(**tiny_model_kwargs, formulation=v_prediction_beta_end_003())
    module.save_pretrained(tmp_path / "pipeline")
    pipeline = DDPMPipeline.from_pretrained(tmp_path / "pipeline")
    assert pipeline.scheduler.config.beta_end == 0.03
    assert pipeline.scheduler.config.prediction_type == "v_prediction"

    for seed in (0, 7):
        ours = module.generate(2, seed=seed, num_inference_steps=STEPS, sampler="ddpm")
        theirs = pipeline(
            batch_size=2, generator=torch.Generator().manual_seed(seed), num_inference_steps=3
        ).images
        assert len(ours) == len(theirs) == 2
        for a, b in zip(ours, theirs, strict=True):
            assert np.array_equal(np.asarray(a), np.asarray(b))
        assert np.asarray(ours[0]).std() > 0
        ours_pt = module.generate(2, seed=seed, num_inference_steps=STEPS, output_type="pt")
        theirs_pt = pipeline(
            batch_size=2,
            generator=torch.Generator().manual_seed(seed),
            num_inference_steps=3,
            output_type="pt",
        ).images
        assert ours_pt.shape == theirs_pt.shape == (2, 3, 16, 16)
        assert torch.allclose(ours_pt, theirs_pt, atol=1e-5, rtol=0)


def test_save_pretrained_refuses_to_overwrite_unless_asked(
    tiny_model_kwargs: dict, tmp_path: Path
) -> None:
    module = DDPMModule(**tiny_model_kwargs)
    target = tmp_path / "pipeline"
    module.save_pretrained(target)
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        module.save_pretrained(target)
    with torch.no_grad():
        module.unet.conv_out.bias.add_(1.0)
    module.save_pretrained(target, overwrite=True)
    reloaded = DDPMPipeline.from_pretrained(target).unet
    assert torch.equal(reloaded.conv_out.bias, module.unet.conv_out.bias)
    assert (target / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in target.iterdir()) == [
        "model_index.json",
        "notes.txt",
        "scheduler",
        "unet",
    ]


# ---------------------------------------------------------------------- 5. sampling
@pytest.mark.parametrize("sampler", sorted(DDPM_SAMPLERS))  # the DDPM formulation's
def test_every_sampler_is_seeded_and_leaves_the_global_rng_alone(
    sampler: str, tiny_model_kwargs: dict
) -> None:
    torch.manual_seed(0)
    module = DDPMModule(**tiny_model_kwargs)
    rng_before = torch.get_rng_state()
    images = module.generate(2, seed=1, num_inference_steps=3, sampler=sampler, output_type="pt")
    again = module.generate(2, seed=1, num_inference_steps=3, sampler=sampler, output_type="pt")
    other = module.generate(2, seed=2, num_inference_steps=3, sampler=sampler, output_type="pt")
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, again)
    assert not torch.allclose(images, other, atol=1e-3)
    assert module.unet.training  # generate restores the training mode it found


@pytest.mark.parametrize(("channels", "mode"), [(1, "L"), (3, "RGB")])
def test_pil_output_has_the_size_and_mode(
    channels: int, mode: str, tiny_model_kwargs: dict
) -> None:
    module = DDPMModule(**tiny_model_kwargs, channels=channels)
    images = module.generate(3, seed=4, num_inference_steps=STEPS)
    tensor = module.generate(3, seed=4, num_inference_steps=STEPS, output_type="pt")
    assert len(images) == 3
    for image, pixels in zip(images, to_uint8(tensor), strict=True):
        assert image.mode == mode and image.size == (16, 16)
        array = np.asarray(image)
        expected = pixels.permute(1, 2, 0).numpy()
        assert np.array_equal(array, expected[..., 0] if channels == 1 else expected)


@pytest.mark.parametrize("batch_size", [2, 5])
def test_predict_generates_one_image_per_seed(batch_size: int, tiny_model_kwargs: dict) -> None:
    module = DDPMModule(**tiny_model_kwargs)
    sampling = SamplingSettings("ddpm", STEPS, seed=10, batch_size=batch_size)
    module.prediction = PredictionSettings(num_images=5, sampling=sampling)
    batches = make_trainer().predict(module)
    assert len(batches) == math.ceil(5 / batch_size)
    images = torch.cat([batch["images"] for batch in batches])
    indices = torch.cat([batch["index"] for batch in batches])
    assert images.dtype == torch.uint8 and images.shape == (5, 3, 16, 16)
    assert indices.tolist() == list(range(5))
    for i in range(5):
        alone = to_uint8(module.image_generator(SamplingSettings("ddpm", STEPS))([10 + i]))[0]
        assert (images[i].int() - alone.int()).abs().max() <= 1
    assert not torch.equal(images[0], images[1])


# ---------------------------------------------------------------------- 6. resume
class Crash(Callback):
    """Stands for a killed job: fails as the second epoch starts (after last.ckpt is saved)."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            raise RuntimeError("simulated crash")


class StepRecorder(Callback):
    def __init__(self) -> None:
        self.lrs: dict[int, float] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.lrs[trainer.global_step] = optimizer.param_groups[0]["lr"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.raw = unet_params(pl_module)
        self.adam = [
            state[key].clone()
            for state in trainer.optimizers[0].state.values()
            for key in ("exp_avg", "exp_avg_sq")
        ]


def test_resumed_run_ends_with_the_uninterrupted_runs_weights(tmp_path: Path) -> None:
    folder = write_images(tmp_path / "images", 8)
    model_kwargs = {
        **TINY_UNET,
        "image_size": 16,
        "learning_rate": 1e-3,
        "lr_scheduler": "cosine",
        "lr_warmup_steps": 2,
    }

    def run(callbacks: list, ckpt_path: str | None = None) -> tuple[L.Trainer, DDPMModule, EMA]:
        L.seed_everything(0)  # as a CLI run or its resumption does
        module = DDPMModule(**model_kwargs)
        datamodule = ImageDataModule(
            data_dir=str(folder), image_size=16, train_batch_size=2, num_workers=0
        )
        ema = EMA(decay=0.999)
        trainer = make_trainer(
            max_epochs=2,
            callbacks=[ema, *callbacks],
            enable_checkpointing=any(isinstance(cb, ModelCheckpoint) for cb in callbacks),
        )
        trainer.fit(module, datamodule, ckpt_path=ckpt_path)
        return trainer, module, ema

    whole = StepRecorder()
    trainer, module, ema = run([whole])

    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run([checkpoint, Crash()])
    last = tmp_path / "ckpt" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 4
    resumed = StepRecorder()
    resumed_trainer, resumed_module, resumed_ema = run([resumed], ckpt_path=str(last))

    assert trainer.global_step == resumed_trainer.global_step == 8
    assert sorted(resumed.lrs) == [4, 5, 6, 7]  # only the second epoch ran again
    for step, lr in resumed.lrs.items():
        assert lr == pytest.approx(whole.lrs[step], rel=1e-6)
    assert max(whole.lrs.values()) == pytest.approx(1e-3, rel=1e-6)
    assert resumed_trainer.lr_scheduler_configs[0].scheduler.last_epoch == 8
    assert all_close(resumed.raw, whole.raw, atol=1e-6)
    assert all(
        torch.allclose(a, b, atol=1e-8) for a, b in zip(resumed.adam, whole.adam, strict=True)
    )
    assert int(resumed_ema._average_model.n_averaged) == int(ema._average_model.n_averaged) == 8
    ema_whole, ema_resumed = (
        unet_params(ema._average_model.module),
        unet_params(resumed_ema._average_model.module),
    )
    assert all_close(ema_resumed, ema_whole, atol=1e-6)
    assert all_close(unet_params(resumed_module), unet_params(module), atol=1e-6)
    assert max_difference(ema_whole, whole.raw) > 1e-5


# ---------------------------------------------------------------------- LR schedule
def test_lr_schedule_steps_per_optimizer_step_with_accumulation(tiny_model_kwargs: dict) -> None:
    module = DDPMModule(**{**tiny_model_kwargs, "learning_rate": 1e-3, "lr_warmup_steps": 2})
    recorder = StepRecorder()
    trainer = make_trainer(max_epochs=2, accumulate_grad_batches=2, callbacks=[recorder])
    trainer.fit(module, image_loader(fixed_images(8), 1))  # 8 batches -> 4 steps per epoch

    total = 8
    assert trainer.estimated_stepping_batches == total
    assert trainer.global_step == total
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == trainer.global_step
    assert trainer.lr_scheduler_configs[0].interval == "step"
    assert sorted(recorder.lrs) == list(range(total))
    for step, lr in recorder.lrs.items():
        if step < 2:
            factor = step / 2
        else:
            factor = 0.5 * (1 + math.cos(math.pi * (step - 2) / (total - 2)))
        assert lr == pytest.approx(1e-3 * factor, abs=1e-12)


def test_step_free_schedules_allow_endless_training(tiny_model_kwargs: dict) -> None:
    trainer = make_trainer(max_epochs=-1)
    for name in ("constant", "constant_with_warmup"):
        module = DDPMModule(**tiny_model_kwargs, lr_scheduler=name)
        module.trainer = trainer
        assert module.configure_optimizers()["lr_scheduler"]["interval"] == "step"
    module = DDPMModule(**tiny_model_kwargs, lr_scheduler="cosine")
    module.trainer = trainer
    with pytest.raises(ValueError, match="max_epochs or max_steps"):
        module.configure_optimizers()


# ---------------------------------------------------------------------- 7. fine-tuning
def test_fine_tuning_starts_from_a_pipeline_and_checkpoints_stand_alone(
    tiny_model_kwargs: dict, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    source = DDPMModule(**tiny_model_kwargs, formulation=v_prediction_beta_end_003())
    pretrained = tmp_path / "pretrained"
    source.save_pretrained(pretrained)

    module = DDPMModule(image_size=16, pretrained_model_name_or_path=str(pretrained))
    assert all_close(unet_params(module), unet_params(source))
    assert module.unet.training  # dropout etc. as in training, not eval mode from from_pretrained
    assert module.noise_scheduler.config.beta_end == 0.03
    assert module.noise_scheduler.config.prediction_type == "v_prediction"

    trainer = make_trainer(max_steps=2)
    trainer.fit(module, image_loader(fixed_images(4), 2))
    trainer.save_checkpoint(tmp_path / "fine_tuned.ckpt")
    assert module.hparams.pretrained_model_name_or_path == str(pretrained)  # only the file changes
    shutil.rmtree(pretrained)

    loaded = DDPMModule.load_from_checkpoint(tmp_path / "fine_tuned.ckpt")
    assert loaded.hparams.pretrained_model_name_or_path is None
    assert all_close(unet_params(loaded), unet_params(module))
    assert loaded.noise_scheduler.config.beta_end == 0.03
    assert loaded.noise_scheduler.config.prediction_type == "v_prediction"
    assert tuple(loaded.unet.config.block_out_channels) == TINY_UNET["block_out_channels"]


def test_pretrained_folder_must_match_the_data(tiny_model_kwargs: dict, tmp_path: Path) -> None:
    DDPMModule(**tiny_model_kwargs).save_pretrained(tmp_path / "pretrained")
    source = str(tmp_path / "pretrained")
    with pytest.raises(ValueError, match="takes 16 px images with 3 channels.*data is 32 px"):
        DDPMModule(image_size=32, pretrained_model_name_or_path=source)
    with pytest.raises(ValueError, match="3 channels.*with 1 channels"):
        DDPMModule(image_size=16, channels=1, pretrained_model_name_or_path=source)
    missing = str(tmp_path / "no_such_pipeline")
    with pytest.raises(OSError, match="no_such_pipeline"):
        DDPMModule(image_size=16, pretrained_model_name_or_path=missing)


# ---------------------------------------------------------------------- 8. errors
#: Where each setting is made now: the module, its formulation, or the sampling settings.
SETTING_OWNERS = {
    "prediction_type": lambda kwargs, value: DDPMFormulation(prediction_type=value),
    "beta_schedule": lambda kwargs, value: DDPMFormulation(beta_schedule=value),
    "sampler": lambda kwargs, value: SamplingSettings(sampler=value),
    "lr_scheduler": lambda kwargs, value: DDPMModule(**kwargs, lr_scheduler=value),
}


@pytest.mark.parametrize(
    ("argument", "value", "allowed"),
    [
        ("prediction_type", "x0", PREDICTION_TYPES),
        ("beta_schedule", "cosine", ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")),
        ("sampler", "euler", ("ddpm", "ddim", "dpm-solver++", "unipc")),
        (
            "lr_scheduler",
            "step",
            (
                "linear",
                "cosine",
                "cosine_with_restarts",
                "polynomial",
                "constant",
                "constant_with_warmup",
            ),
        ),
    ],
)
def test_unknown_choices_are_refused_with_the_allowed_ones(
    argument: str, value: str, allowed: tuple[str, ...], tiny_model_kwargs: dict
) -> None:
    with pytest.raises(InvalidSettingError, match=f"Unknown {argument} '{value}'") as error:
        SETTING_OWNERS[argument](tiny_model_kwargs, value)
    assert isinstance(error.value, ValueError)
    for name in allowed:
        assert repr(name) in str(error.value)


def test_generate_refuses_an_unknown_sampler(tiny_model_kwargs: dict) -> None:
    module = DDPMModule(**tiny_model_kwargs)
    with pytest.raises(ValueError, match=r"Unknown sampler 'euler'.*'unipc'"):
        module.generate(1, sampler="euler")
    with pytest.raises(ValueError, match=r"Unknown output_type 'np'.*'pt'"):
        module.generate(1, output_type="np")


def test_image_size_the_unet_cannot_halve_is_refused() -> None:
    with pytest.raises(ValueError, match="image_size 18.*multiple of 4.*16 or 20"):
        DDPMModule(image_size=18, block_out_channels=(32, 64, 64), norm_num_groups=8)
    DDPMModule(image_size=20, block_out_channels=(32, 64, 64), norm_num_groups=8)


@pytest.mark.parametrize(
    ("data_kwargs", "message"),
    [
        ({"image_size": 8}, "image_size=8 but the model .* image_size=16"),
        ({"channels": 1}, "channels=1 but the model .* channels=3"),
    ],
)
def test_data_that_differs_from_the_model_fails_before_training(
    data_kwargs: dict, message: str, tiny_model_kwargs: dict, image_folder: Path
) -> None:
    module = DDPMModule(**tiny_model_kwargs)
    start = unet_params(module)
    datamodule = ImageDataModule(
        data_dir=str(image_folder), **{"image_size": 16, **data_kwargs}, train_batch_size=4
    )
    trainer = make_trainer(max_steps=2)
    with pytest.raises(ValueError, match=message):
        trainer.fit(module, datamodule)
    assert trainer.global_step == 0
    assert all_close(unet_params(module), start)


def test_nan_loss_stops_training(tiny_model_kwargs: dict) -> None:
    images = fixed_images(4)
    images[2, 0, 3, 3] = float("nan")
    module = DDPMModule(**tiny_model_kwargs)
    trainer = make_trainer(max_steps=4)
    with pytest.raises(FloatingPointError, match="nan at step 1 .*batch 1"):
        trainer.fit(module, image_loader(images, 2))
    assert trainer.global_step == 1


# ---------------------------------------------------------------------- 9. speed switches
def losses_and_weights(
    module: DDPMModule, steps: int = 4, callbacks: list | None = None, **trainer_overrides
) -> tuple[list[float], dict]:
    """Per-step losses and final weights of a short seeded run on fixed images."""
    L.seed_everything(0)
    recorder = LossRecorder()
    callbacks = [recorder, *(callbacks or [])]
    make_trainer(max_steps=steps, callbacks=callbacks, **trainer_overrides).fit(
        module, image_loader(fixed_images(8), 4)
    )
    return recorder.losses, unet_params(module)


def module_and_callbacks(switch: dict) -> tuple[dict, list]:
    """``adam_fused`` is a module (optimiser) argument; the others are ``SpeedSwitches``."""
    module_args = {k: v for k, v in switch.items() if k == "adam_fused"}
    speed = {k: v for k, v in switch.items() if k != "adam_fused"}
    return module_args, [SpeedSwitches(**speed)] if speed else []


def assert_switch_applied(switch: dict, module: DDPMModule) -> None:
    """The switch really was on during the run (not a plain run that trivially matches)."""
    unet = module.unet
    checks = {
        "channels_last": lambda: unet.conv_in.weight.is_contiguous(
            memory_format=torch.channels_last
        ),
        "float32_matmul_precision": lambda: torch.get_float32_matmul_precision() == "high",
        "gradient_checkpointing": lambda: unet.is_gradient_checkpointing,
        "compile_unet": lambda: getattr(unet, "_compiled_call_impl", None) is not None,
    }
    for name in switch:
        if name in checks:
            assert checks[name](), name


@pytest.fixture(scope="module")
def plain_run() -> tuple[list[float], dict]:
    L.seed_everything(0)
    return losses_and_weights(DDPMModule(image_size=16, **TINY_UNET, lr_warmup_steps=1))


@pytest.mark.parametrize(
    "switch",
    [
        {"channels_last": True},
        {"float32_matmul_precision": "high"},
        {"adam_fused": True},
        {"gradient_checkpointing": True},
        pytest.param({"compile_unet": True}, marks=pytest.mark.slow),
    ],
    ids=lambda switch: next(iter(switch)),
)
def test_speed_switch_trains_the_plain_paths_loss_curve(switch: dict, plain_run, tmp_path) -> None:
    precision = torch.get_float32_matmul_precision()  # process-wide: put back afterwards
    try:
        L.seed_everything(0)
        module_args, callbacks = module_and_callbacks(switch)
        module = DDPMModule(image_size=16, **TINY_UNET, lr_warmup_steps=1, **module_args)
        keys = list(module.state_dict())
        losses, weights = losses_and_weights(module, callbacks=callbacks)
        assert_switch_applied(switch, module)
    finally:
        torch.set_float32_matmul_precision(precision)
    plain_losses, plain_weights = plain_run
    # Same noise, timesteps and data at every step: only float rounding may differ.
    np.testing.assert_allclose(losses, plain_losses, rtol=1e-4)
    assert max_difference(weights, plain_weights) < 1e-5
    # Checkpoints and exports look as without the switch (no "_orig_mod." prefixes).
    assert list(module.state_dict()) == keys
    module.save_pretrained(tmp_path / "pipeline")
    assert DDPMModule(image_size=16, pretrained_model_name_or_path=str(tmp_path / "pipeline"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    "switch",
    [
        {"adam_fused": True},
        {"channels_last": True},
        {"float32_matmul_precision": "high"},
        {"compile_unet": True},
    ],
    ids=lambda switch: next(iter(switch)),
)
def test_speed_switch_on_gpu_trains_the_plain_paths_loss_curve(switch: dict) -> None:
    # Where the switches take effect: fused kernels, tensor-core layouts, TF32 and Triton.
    def run(**options) -> tuple[list[float], dict]:
        L.seed_everything(0)
        module_args, callbacks = module_and_callbacks(options)
        module = DDPMModule(image_size=16, **TINY_UNET, lr_warmup_steps=1, **module_args)
        return losses_and_weights(module, callbacks=callbacks, accelerator="gpu")

    precision = torch.get_float32_matmul_precision()
    try:
        losses, weights = run(**{"adam_fused": False, **switch})
    finally:
        torch.set_float32_matmul_precision(precision)
    plain_losses, plain_weights = run(adam_fused=False)
    # TF32 rounds matmul inputs to 10 mantissa bits: noise of about 1e-3, not another curve.
    np.testing.assert_allclose(losses, plain_losses, rtol=5e-3)
    # cuDNN picks other convolution algorithms for channels-last and compiled graphs: the H200
    # run (BENCHMARKS.md, section 5) measured 1.0e-4 and 1.2e-4 after the run's steps.
    assert max_difference(weights, plain_weights) < 5e-4


@pytest.mark.parametrize("adam_fused, expected", [(None, False), (True, True), (False, False)])
def test_fused_adamw_is_on_only_where_asked_or_on_cuda(
    adam_fused, expected, tiny_model_kwargs: dict
) -> None:
    module = DDPMModule(**tiny_model_kwargs, adam_fused=adam_fused)
    trainer = make_trainer(max_steps=1)
    trainer.fit(module, image_loader(fixed_images(4), 4))
    assert bool(trainer.optimizers[0].defaults["fused"]) is expected
