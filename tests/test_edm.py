"""The EDM formulation: the paper's formulas, its samplers, export and exact resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import DiffusionPipeline

from ddpm_lightning import DDPMModule
from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.formulations import EDMFormulation
from ddpm_lightning.loading import load_module
from ddpm_lightning.sampling import SamplingSettings
from ddpm_lightning.sampling.edm_heun import EDMHeunScheduler

from .conftest import TINY_UNET, assert_exact_resume, few_steps
from .test_conditional import redness, trained_on_blobs, write_blob_folder

SIGMAS = torch.tensor([0.002, 0.1, 0.5, 1.0, 3.0, 80.0])


def test_preconditioning_and_weight_are_the_papers_formulas() -> None:
    edm = EDMFormulation(sigma_data=0.5)
    c = edm.preconditioning(SIGMAS)
    # Karras et al. 2022, Table 1 (EDM column), written out for each sigma on its own.
    for index, s in enumerate(SIGMAS.tolist()):
        total = s**2 + 0.25
        assert c["c_skip"][index].item() == pytest.approx(0.25 / total, rel=1e-6)
        assert c["c_out"][index].item() == pytest.approx(s * 0.5 / total**0.5, rel=1e-6)
        assert c["c_in"][index].item() == pytest.approx(1 / total**0.5, rel=1e-6)
        assert c["c_noise"][index].item() == pytest.approx(
            0.25 * torch.tensor(s).log().item(), rel=1e-5
        )
        assert edm.loss_weight(SIGMAS)[index].item() == pytest.approx(
            total / (s * 0.5) ** 2, rel=1e-6
        )


def test_the_loss_is_lambda_times_the_denoisers_error() -> None:
    # The UNet's error on the effective target, weighted, equals lambda(sigma) |D(x) - y|^2.
    edm = EDMFormulation()
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(len(SIGMAS), 3, 8, 8, generator=generator) * 2 - 1
    noise = torch.randn(clean.shape, generator=generator)
    output = torch.randn(clean.shape, generator=generator)  # any network output F
    example = edm.training_example(clean, noise, SIGMAS)
    c = {k: v.view(-1, 1, 1, 1) for k, v in edm.preconditioning(SIGMAS).items()}
    noisy = clean + SIGMAS.view(-1, 1, 1, 1) * noise
    torch.testing.assert_close(example.network_input, c["c_in"] * noisy)
    assert example.noise_condition.dtype == torch.float32  # not rounded to an int timestep
    torch.testing.assert_close(example.noise_condition, SIGMAS.log() / 4)
    denoised = c["c_skip"] * noisy + c["c_out"] * output
    paper = (edm.loss_weight(SIGMAS).view(-1, 1, 1, 1) * (denoised - clean) ** 2).mean()
    torch.testing.assert_close(edm.loss(output, example), paper, rtol=1e-5, atol=0)


def test_noise_levels_are_log_normal() -> None:
    edm = EDMFormulation(p_mean=-1.2, p_std=1.2)
    _, sigmas = edm.sample_noise(torch.zeros(20000, 1, 1, 1), torch.Generator().manual_seed(0))
    assert sigmas.log().mean().item() == pytest.approx(-1.2, abs=0.03)
    assert sigmas.log().std().item() == pytest.approx(1.2, abs=0.03)


def test_heun_takes_two_evaluations_per_step_but_the_last() -> None:
    scheduler = EDMHeunScheduler()
    scheduler.set_timesteps(10)
    assert len(scheduler.timesteps) == 2 * 10 - 1
    assert scheduler.init_noise_sigma == 80.0
    # Exact on a denoiser that knows the answer: D(x) = 0 for data at 0 (x_t = sigma n).
    sample = torch.randn(2, 3, 4, 4) * scheduler.init_noise_sigma
    for timestep in scheduler.timesteps:
        scaled = scheduler.scale_model_input(sample, timestep)
        sigma = scheduler.evaluation_sigmas[scheduler._evaluation]
        c_skip = 0.25 / (sigma**2 + 0.25)
        c_out = sigma * 0.5 / (sigma**2 + 0.25) ** 0.5
        model_output = -c_skip * sample / c_out  # so that D = c_skip x + c_out F = 0
        assert scaled.shape == sample.shape
        sample = scheduler.step(model_output, timestep, sample).prev_sample
    assert sample.abs().max().item() < 1e-4


def test_settings_refuse_impossible_values_and_ddpm_samplers() -> None:
    with pytest.raises(InvalidSettingError, match="sigma_min < sigma_max"):
        EDMFormulation(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(InvalidSettingError, match="sigma_data must be above 0"):
        EDMFormulation(sigma_data=0)
    module = DDPMModule(image_size=16, **TINY_UNET, formulation=EDMFormulation())
    with pytest.raises(InvalidSettingError, match=r"Unknown sampler 'ddim'.*edm-heun"):
        module.image_generator(SamplingSettings("ddim", 20))


@pytest.mark.slow
def test_a_tiny_edm_model_separates_two_colours_at_20_heun_steps() -> None:
    """Issue 22's wash-out: deterministic 20-step sampling keeps the classes' colours apart."""

    def colour_gap(module: DDPMModule, sampler: str) -> float:
        generator = module.image_generator(SamplingSettings(sampler, 20))
        red, blue = (generator(list(range(8)), class_labels=[c] * 8) for c in ("red", "blue"))
        return (redness(red).mean() - redness(blue).mean()).item()

    ddim = colour_gap(trained_on_blobs(), "ddim")  # DDPM trained, same steps: 0.43 measured
    edm = trained_on_blobs(formulation=EDMFormulation())
    margins = {sampler: colour_gap(edm, sampler) for sampler in ("edm-heun", "edm-euler")}

    # Measured: 1.69 (Heun) and 1.67 (Euler), where a pure red and a pure blue blob differ by 4.
    assert min(margins.values()) > max(1.0, 2 * ddim), (margins, ddim)


def test_the_export_gives_the_modules_images_and_loads_in_diffusers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = DDPMModule(image_size=16, **TINY_UNET, formulation=EDMFormulation())
    module.save_pretrained(tmp_path / "pipeline")
    pipeline = DiffusionPipeline.from_pretrained(tmp_path / "pipeline")
    assert type(pipeline).__name__ == "EDMPipeline"
    module.eval()  # as the reloaded pipeline's UNet is
    for sampler in ("edm-euler", "edm-heun"):  # Heun plugs into the exported pipeline too
        if sampler == "edm-heun":
            pipeline.scheduler = EDMHeunScheduler.from_config(pipeline.scheduler.config)
        generator = torch.Generator().manual_seed(3)
        exported = pipeline(3, generator=generator, num_inference_steps=6, output_type="pt")
        images = module.generate(3, 3, 6, sampler, output_type="pt")
        assert torch.equal(images, exported.images), sampler
    # sample/evaluate/predict --source <folder>: the folder loads as the EDM model it was.
    loaded = load_module(str(tmp_path / "pipeline"))
    assert isinstance(loaded.formulation, EDMFormulation)
    assert loaded.formulation.init_args() == module.formulation.init_args()
    images = module.generate(2, 5, 4, "edm-heun", output_type="pt")
    assert torch.equal(loaded.eval().generate(2, 5, 4, "edm-heun", output_type="pt"), images)


def test_an_edm_run_resumed_at_an_epoch_boundary_ends_with_the_same_weights(
    tmp_path: Path,
) -> None:
    resumed = assert_exact_resume(
        tmp_path,
        write_blob_folder(tmp_path / "images"),
        model={"formulation": EDMFormulation()},
        outputs={
            "use_ema": False,
            "save_image_epochs": 1,
            "save_model_epochs": 100,
            "sampling": few_steps("edm-heun", 2),
        },
    )
    assert (resumed / "samples" / "0001.png").is_file()  # EDM grids
    reloaded = DDPMModule.load_from_checkpoint(
        resumed / "checkpoints" / "last.ckpt", weights_only=False
    )
    assert isinstance(reloaded.formulation, EDMFormulation)
