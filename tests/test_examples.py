"""The Python examples run as users run them, with small overrides, so they cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from diffusers import DDPMPipeline

from ddpm_lightning.pipelines import ClassConditionalDDPMPipeline

from .conftest import BUTTERFLIES_DIR

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str, cwd: Path) -> None:
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    import os

    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_train_butterflies_script_on_a_folder(tmp_path: Path, image_folder: Path) -> None:
    out = tmp_path / "run"
    run_example(
        "train_butterflies.py",
        f"--data-dir={image_folder}",
        "--image-size=16",
        "--epochs=1",
        "--tiny",
        f"--output-dir={out}",
        cwd=tmp_path,
    )
    assert (out / "samples" / "0000.png").is_file()
    assert DDPMPipeline.from_pretrained(out).unet.config.sample_size == 16


def test_custom_dataset_subclass_example(tmp_path: Path) -> None:
    out = tmp_path / "discs"
    run_example("custom_dataset.py", "--epochs=1", f"--output-dir={out}", cwd=tmp_path)
    assert (out / "samples" / "0000.png").is_file()
    assert (out / "model_index.json").is_file()


@pytest.mark.skipif(not BUTTERFLIES_DIR.is_dir(), reason="needs ../shared/data/butterflies")
def test_custom_dataset_example_labels_butterflies_by_species(tmp_path: Path) -> None:
    out = tmp_path / "species"
    run_example(
        "custom_dataset.py", "--epochs=1", f"--output-dir={out}", f"--species={BUTTERFLIES_DIR}",
        cwd=tmp_path,
    )  # fmt: skip
    pipeline = ClassConditionalDDPMPipeline.from_pretrained(out)
    assert list(pipeline.labels) == [f"{species:03d}" for species in range(1, 11)]
    assert (out / "samples" / "0000.png").is_file()


def test_notebook_example_runs_two_cpu_processes(tmp_path: Path, image_folder: Path) -> None:
    out = tmp_path / "ddp"
    run_example("notebook_multi_gpu.py", "--cpu", str(image_folder), str(out), cwd=tmp_path)
    assert (out / "samples" / "0000.png").is_file()
