"""One overwrite guard, checked before any work: re-runs, predictions, samples."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from ddpm_lightning.cli import run
from ddpm_lightning.sampling import generation

from .test_cli import TINY_OVERRIDES


def fit_args(image_folder: Path, output_dir: Path, *extra: str) -> list[str]:
    return ["fit", *TINY_OVERRIDES, "--model=DDPMModule", "--data=ImageDataModule",
            f"--data.init_args.data_dir={image_folder}", f"--output.output_dir={output_dir}",
            "--trainer.max_epochs=1", *extra]  # fmt: skip


@pytest.fixture
def generations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the batches any path generates (every one goes through ImageGenerator)."""
    calls: list[int] = []
    original = generation.denoise

    def counted(unet, scheduler, num_images, *args, **kwargs):
        calls.append(num_images)
        return original(unet, scheduler, num_images, *args, **kwargs)

    monkeypatch.setattr(generation, "denoise", counted)
    return calls


def test_fit_into_a_folder_with_any_earlier_grid_is_refused_before_training(
    tmp_path: Path, image_folder: Path, generations: list[int]
) -> None:
    grid = tmp_path / "run" / "samples" / "0001.png"  # an interrupted run's second grid only
    grid.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(grid)
    before = grid.read_bytes()
    refused = r"0001\.png.*--ckpt_path last.*overwrite_output_dir true"
    with pytest.raises(FileExistsError, match=refused):
        run(fit_args(image_folder, tmp_path / "run", "--output.save_image_epochs=2"))
    assert grid.read_bytes() == before
    assert not (tmp_path / "run" / "checkpoints").exists() and generations == []


def test_predict_refuses_before_generating_and_proceeds_when_asked(
    tmp_path: Path, image_folder: Path, generations: list[int]
) -> None:
    run(fit_args(image_folder, tmp_path / "run"))
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    predict = ["predict", *TINY_OVERRIDES, "--model=DDPMModule", f"--ckpt_path={checkpoint}",
               f"--output.output_dir={tmp_path / 'run'}", "--predict.num_images=3",
               "--predict.sampling.num_inference_steps=2"]  # fmt: skip
    earlier = tmp_path / "run" / "predictions" / "00000.png"
    earlier.parent.mkdir()
    Image.new("RGB", (16, 16), "red").save(earlier)
    generated_in_fit = len(generations)
    assert generated_in_fit > 0  # the counter sees the fit's grid
    with pytest.raises(FileExistsError, match=r"00000\.png.*overwrite_output_dir true"):
        run(predict)
    assert len(generations) == generated_in_fit  # refused before generating anything
    run([*predict, "--output.overwrite_output_dir=true"])
    assert sum(generations[generated_in_fit:]) == 3
    written = sorted(p.name for p in earlier.parent.iterdir())
    assert written == ["00000.png", "00001.png", "00002.png"]
    assert Image.open(earlier).getpixel((0, 0)) != (255, 0, 0)  # replaced by a generated image
