from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from diffusers import DDPMPipeline, DiffusionPipeline
from PIL import Image

from ddpm_lightning import DDPMModule
from ddpm_lightning.callbacks import SpeedSwitches
from ddpm_lightning.cli import run
from ddpm_lightning.console import main
from ddpm_lightning.pipelines import (
    ClassConditionalDDPMPipeline,
    EDMPipeline,
    LatentDiffusionPipeline,
)

from .conftest import TINY_UNET
from .test_latents import save_tiny_autoencoder

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "examples" / "configs").glob("*.yaml"))

TINY_OVERRIDES = [
    "--model.init_args.block_out_channels=[32, 64]",
    "--model.init_args.layers_per_block=1",
    "--model.init_args.norm_num_groups=8",
    "--model.init_args.lr_warmup_steps=1",
    "--data.init_args.image_size=16",
    "--data.init_args.train_batch_size=4",
    "--trainer.accelerator=cpu",
    "--trainer.precision=32-true",
    "--trainer.enable_progress_bar=false",
    "--output.eval_batch_size=4",
    "--output.sampling.num_inference_steps=2",
    "--output.throughput_window=2",
]


def tiny_command(subcommand: str, data_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    """A ``fit``/``predict`` command line for the tiny UNet on an image folder."""
    classes = ["--model=DDPMModule", "--data=ImageDataModule"]
    folders = [f"--data.init_args.data_dir={data_dir}", f"--output.output_dir={output_dir}"]
    return [subcommand, *TINY_OVERRIDES, *classes, *folders, *extra]


def tiny_pipeline(folder: Path) -> Path:
    """A tiny exported pipeline to fine-tune from (the Hub is unreachable in tests)."""
    DDPMModule(image_size=16, **TINY_UNET).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_shipped_config_trains_through_the_real_cli(
    config: Path, tmp_path: Path, image_folder: Path
) -> None:
    output_dir = tmp_path / "run"
    # An overlay (no class_path of its own, like fast_gpu.yaml) goes over the tutorial's config.
    base = (
        []
        if "class_path" in config.read_text()
        else [f"--config={config.with_name('butterflies.yaml')}"]
    )
    args = [
        "fit",
        *base,
        f"--config={config}",
        *TINY_OVERRIDES,
        "--data.init_args.dataset_name=imagefolder",
        f"--data.init_args.data_dir={image_folder}",
        f"--output.output_dir={output_dir}",
        "--output.push_to_hub=false",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
    ]
    if "pretrained_model_name_or_path" in config.read_text():
        pretrained = tiny_pipeline(tmp_path / "pretrained")
        args.append(f"--model.init_args.pretrained_model_name_or_path={pretrained}")
    pipeline_class = DDPMPipeline
    if "label_column" in config.read_text():  # a conditional config: a folder per class
        for index, image in enumerate(sorted(image_folder.glob("*.png"))):
            (image_folder / ("a", "b")[index % 2]).mkdir(exist_ok=True)
            image.rename(image_folder / ("a", "b")[index % 2] / image.name)
        args.append("--data.init_args.label_column=label")
        pipeline_class = ClassConditionalDDPMPipeline
    if "EDMFormulation" in config.read_text():  # the main job's recipe: an EDM export
        pipeline_class = EDMPipeline
    if "down_block_types" in config.read_text():  # its own block types: keep their 3 levels
        args.append("--model.init_args.block_out_channels=[8, 16, 32]")
    sample_size = 16
    if "autoencoder:" in config.read_text():  # a latent config: a tiny local autoencoder
        autoencoder = save_tiny_autoencoder(tmp_path / "vae")
        args.append(f"--model.init_args.autoencoder={autoencoder}")
        pipeline_class, sample_size = LatentDiffusionPipeline, 8
    cli = run(args)
    assert cli.trainer.global_step == 2
    assert (output_dir / "samples" / "0000.png").is_file()
    assert (output_dir / "checkpoints" / "last.ckpt").is_file()
    pipeline = DiffusionPipeline.from_pretrained(output_dir)
    assert type(pipeline) is pipeline_class and pipeline.unet.config.sample_size == sample_size
    assert cli.model.hparams.image_size == 16  # linked from the data
    if config.name == "fast_gpu.yaml":  # the overlay's switches reach the module
        speed = [cb for cb in cli.trainer.callbacks if isinstance(cb, SpeedSwitches)]
        assert len(speed) == 1 and speed[0].channels_last
        weight = cli.model.unet.conv_in.weight
        assert weight.is_contiguous(memory_format=torch.channels_last)
        assert "channels_last" not in cli.model.hparams  # a speed switch, not a hyperparameter
        assert cli.model.hparams.learning_rate == 1e-4


def test_print_config_shows_the_tutorials_values(capsys: pytest.CaptureFixture) -> None:
    config = next(c for c in CONFIGS if c.stem == "butterflies")
    with pytest.raises(SystemExit):
        main(["fit", f"--config={config}", "--print_config"])
    printed = capsys.readouterr().out
    for expected in (
        "max_epochs: 50",
        "precision: 16-mixed",
        "learning_rate: 0.0001",
        "lr_warmup_steps: 500",
        "image_size: 128",
        "train_batch_size: 16",
        "dataset_name: huggan/smithsonian_butterflies_subset",
        "output_dir: ddpm-butterflies-128",
        "save_image_epochs: 10",
        "save_model_epochs: 30",
        "eval_batch_size: 16",
        "accumulate_grad_batches: 1",
        "- 512",
    ):
        assert expected in printed, expected


@pytest.mark.parametrize(
    "command", [["--help"], ["fit", "--help"], ["export", "--help"], ["sample", "--help"]]
)
def test_help(command: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    assert exit_info.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_fit_then_export_then_sample_end_to_end(
    tmp_path: Path, image_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    caplog.set_level(logging.INFO)
    main(
        [
            "fit",
            *TINY_OVERRIDES,
            "--model=DDPMModule",
            "--data=ImageDataModule",
            f"--data.init_args.data_dir={image_folder}",
            f"--output.output_dir={run_dir}",
            "--trainer.max_epochs=1",
            "--output.save_image_epochs=1",
            "--output.save_model_epochs=1",
        ]
    )
    # The run ends by saying where its results are.
    assert f"Last sample grid: {run_dir / 'samples' / '0000.png'}" in caplog.text
    assert f"DDPMPipeline of epoch 0: {run_dir} (ddpm-lightning sample --source" in caplog.text
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    exported = tmp_path / "exported"
    main(["export", f"--ckpt_path={checkpoint}", f"--output_dir={exported}"])
    pipeline = DDPMPipeline.from_pretrained(exported)
    module = DDPMModule.load_from_checkpoint(checkpoint, weights_only=False)
    for name, value in module.unet.state_dict().items():
        assert torch.equal(pipeline.unet.state_dict()[name], value)
    with pytest.raises(FileExistsError, match="overwrite"):
        run(["export", f"--ckpt_path={checkpoint}", f"--output_dir={exported}"])

    for source in (checkpoint, exported):
        out = tmp_path / f"samples-{Path(source).name}"
        main(
            [
                "sample",
                f"--source={source}",
                f"--output_dir={out}",
                "--num_images=3",
                "--sampler=dpm-solver++",
                "--num_inference_steps=3",
                "--batch_size=2",
            ]
        )
        assert Image.open(out / "00002.png").size == (16, 16)
        assert Image.open(out / "grid.png").size == (32, 32)  # 3 images in a 2 x 2 grid
    same = [
        (tmp_path / f"samples-{name}" / "00001.png").read_bytes()
        for name in ("last.ckpt", "exported")
    ]
    assert same[0] == same[1]
    with pytest.raises(FileExistsError):
        run(
            [
                "sample",
                f"--source={exported}",
                f"--output_dir={tmp_path / 'samples-exported'}",
                "--num_images=3",
                "--num_inference_steps=3",
            ]
        )


def test_predict_writes_pngs(tmp_path: Path, image_folder: Path) -> None:
    pretrained = tiny_pipeline(tmp_path / "pretrained")
    main(
        [
            "predict",
            *TINY_OVERRIDES,
            "--model=DDPMModule",
            "--data=ImageDataModule",
            f"--data.init_args.data_dir={image_folder}",
            f"--output.output_dir={tmp_path / 'run'}",
            f"--model.init_args.pretrained_model_name_or_path={pretrained}",
            "--predict.num_images=3",
            "--predict.sampling.num_inference_steps=2",
        ]
    )
    assert sorted(p.name for p in (tmp_path / "run" / "predictions").iterdir()) == [
        "00000.png",
        "00001.png",
        "00002.png",
    ]


def test_corrupt_checkpoint_and_wrong_paths_get_clear_errors(tmp_path: Path) -> None:
    from ddpm_lightning.loading import CheckpointError

    corrupt = tmp_path / "last.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="corrupt"):
        run(["export", f"--ckpt_path={corrupt}", f"--output_dir={tmp_path / 'out'}"])
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        run(
            [
                "export",
                f"--ckpt_path={tmp_path / 'missing.ckpt'}",
                f"--output_dir={tmp_path / 'out'}",
            ]
        )
    with pytest.raises(FileNotFoundError, match="not a diffusers pipeline"):
        run(["sample", f"--source={tmp_path}", f"--output_dir={tmp_path / 'out'}"])
    assert not (tmp_path / "out").exists()


def test_console_script_exits_zero(tmp_path: Path) -> None:
    import subprocess
    import sys

    pipeline = tiny_pipeline(tmp_path / "pipeline")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ddpm_lightning",
            "sample",
            f"--source={pipeline}",
            f"--output_dir={tmp_path / 'out'}",
            "--num_images=2",
            "--num_inference_steps=2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out" / "grid.png").is_file()


def test_fit_resume_from_a_corrupt_checkpoint_says_what_to_do(
    tmp_path: Path, image_folder: Path
) -> None:
    from ddpm_lightning.loading import CheckpointError

    corrupt = tmp_path / "last.ckpt"
    corrupt.write_bytes(b"\x80\x04 truncated pickle")
    with pytest.raises(CheckpointError, match="earlier epoch"):
        run(
            [
                "fit",
                *TINY_OVERRIDES,
                "--model=DDPMModule",
                "--data=ImageDataModule",
                f"--data.init_args.data_dir={image_folder}",
                f"--output.output_dir={tmp_path / 'run'}",
                f"--ckpt_path={corrupt}",
            ]
        )
    assert not (tmp_path / "run" / "samples").exists()


def test_validate_reports_the_fixed_noise_loss(tmp_path: Path, image_folder: Path) -> None:
    common = [
        *TINY_OVERRIDES,
        "--model=DDPMModule",
        "--data=ImageDataModule",
        f"--data.init_args.data_dir={image_folder}",
        "--data.init_args.val_fraction=0.25",
        f"--output.output_dir={tmp_path / 'run'}",
    ]
    run(["fit", *common, "--trainer.max_epochs=1"])
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    first = run(["validate", *common, f"--ckpt_path={checkpoint}"]).trainer.callback_metrics
    second = run(["validate", *common, f"--ckpt_path={checkpoint}"]).trainer.callback_metrics
    assert torch.isfinite(first["val/loss"])
    assert first["val/loss"] == second["val/loss"]  # fixed noise: comparable across runs


def test_a_fine_tuned_checkpoint_is_used_by_predict_without_the_pretrained_folder(
    tmp_path: Path, image_folder: Path
) -> None:
    import shutil

    pretrained = tiny_pipeline(tmp_path / "pretrained")
    common = [
        *TINY_OVERRIDES,
        "--model=DDPMModule",
        "--data=ImageDataModule",
        f"--data.init_args.data_dir={image_folder}",
        f"--output.output_dir={tmp_path / 'run'}",
    ]
    run(
        [
            "fit",
            *common,
            f"--model.init_args.pretrained_model_name_or_path={pretrained}",
            "--trainer.max_epochs=1",
        ]
    )
    shutil.rmtree(pretrained)  # the checkpoint must stand alone
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    run(
        [
            "predict",
            *common,
            f"--ckpt_path={checkpoint}",
            "--predict.num_images=2",
            "--predict.sampling.num_inference_steps=2",
        ]
    )
    assert len(list((tmp_path / "run" / "predictions").glob("*.png"))) == 2
