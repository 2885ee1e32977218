"""benchmarks/quality.py: the README's quality command runs end to end and scores the main job."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from ddpm_lightning import DDPMModule
from ddpm_lightning.formulations import EDMFormulation

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def quality(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The benchmark module, its classifier cache in a temporary home."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import quality

    return quality


def species_folder(folder: Path, per_species: int = 8) -> Path:
    """Two 'species' (file names 001... and 002...): reddish and bluish 32 px images."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for species, channel in ((1, 0), (2, 2)):
        for index in range(per_species):
            pixels = rng.integers(0, 90, (32, 32, 3), dtype=np.uint8)
            pixels[..., channel] += 160
            Image.fromarray(pixels).save(folder / f"{species:03d}{index:04d}.png")
    return folder


def test_main_job_row_is_folder_cpu_yaml_as_configured(quality) -> None:
    config = yaml.safe_load(quality.MAIN_JOB_CONFIG.read_text())
    recipe = quality.RECIPES["main-job"]
    settings = recipe.module()

    module = DDPMModule(**{**quality.FOLDER_CPU_MODEL, **settings})

    assert recipe.epochs == config["trainer"]["max_epochs"]
    assert recipe.batch_size == config["data"]["init_args"]["train_batch_size"]
    assert recipe.sampling == (
        f"{config['output']['sampling']['sampler']}:"
        f"{config['output']['sampling']['num_inference_steps']}"
    )
    init_args = config["model"]["init_args"]
    assert list(module.unet.config.block_out_channels) == init_args["block_out_channels"]
    assert settings["lr_scheduler"] == init_args["lr_scheduler"]
    assert isinstance(settings["formulation"], EDMFormulation)
    assert settings["formulation"] is not recipe.module()["formulation"]  # fresh every run


def test_main_job_recipe_refuses_a_config_at_another_size(quality, tmp_path: Path) -> None:
    config = yaml.safe_load(quality.MAIN_JOB_CONFIG.read_text())
    config["data"]["init_args"]["image_size"] = 64
    path = tmp_path / "folder_64.yaml"
    path.write_text(yaml.safe_dump(config))

    with pytest.raises(ValueError, match="64 px.*scores 32 px"):
        quality.main_job_recipe(path)


@pytest.mark.parametrize("value", ["0", "-5"])
def test_bad_budgets_are_refused_with_the_flag_named(quality, value: str, capsys) -> None:
    with pytest.raises(SystemExit):
        quality.parse_args(["--budget-seconds", value])
    assert "--budget-seconds must be above 0" in capsys.readouterr().err


def test_quality_run_prints_the_table_and_writes_scores_and_grids(
    quality, tmp_path: Path, capsys
) -> None:
    photos = species_folder(tmp_path / "photos")
    output = tmp_path / "quality.json"

    quality.main(
        [
            "--recipes", "edm-narrow-noattn", "main-job",
            "--seeds", "0", "1",
            "--num-images", "4",
            "--budget-seconds", "30",
            "--max-steps", "2",
            "--data-dir", str(photos),
            "--output", str(output),
            "--threads", "1",
        ]
    )  # fmt: skip

    printed = capsys.readouterr().out
    assert "| floor: held-out photos" in printed
    assert "| main-job " in printed and "| edm-narrow-noattn " in printed
    assert "| ceiling: uniform noise" in printed
    results = json.loads(output.read_text())
    for name in ("edm-narrow-noattn", "main-job"):
        recipe = results["recipes"][name]
        assert recipe["sampling"] == "edm-heun:18"
        assert [run["seed"] for run in recipe["runs"]] == [0, 1]
        assert [run["training_steps"] for run in recipe["runs"]] == [2, 2]  # --max-steps
        assert math.isfinite(recipe["fd"]["mean"]) and recipe["fd"]["std"] is not None
        assert 0.0 < recipe["nearest"]["mean"] < 1.0
        for seed in (0, 1):
            assert (tmp_path / "quality-grids" / f"{name}-seed{seed}.png").stat().st_size > 0
    # Two steps of training are far from the photos: worse than the real-vs-real floor.
    assert results["recipes"]["main-job"]["fd"]["mean"] > results["floor"]["fd"]["mean"]
