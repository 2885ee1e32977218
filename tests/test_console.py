# ruff: noqa: E501  (the table of mistakes reads best one mistake a line)
"""The real ``ddpm-lightning`` console script, as a user meets it: mistakes, noise, --help."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightning as L
import pytest

from ddpm_lightning import DDPMModule, ImageDataModule

from .conftest import TINY_UNET, write_images
from .test_cli import TINY_OVERRIDES

SCRIPT = str(Path(sys.executable).with_name("ddpm-lightning"))


def console(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, timeout=300, env=environment
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Images, an empty and a corrupt folder, a checkpoint, a pipeline and a broken file."""
    root = tmp_path_factory.mktemp("console")
    images = write_images(root / "images", 8)
    (root / "empty").mkdir()
    corrupt = write_images(root / "corrupt", 3)
    (corrupt / "image_001.png").write_bytes(b"not a png at all")
    module = DDPMModule(image_size=16, **TINY_UNET, lr_warmup_steps=1)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, ImageDataModule(data_dir=str(images), image_size=16, train_batch_size=4))
    trainer.save_checkpoint(root / "model.ckpt")
    module.save_pretrained(root / "pipeline")
    (root / "broken.ckpt").write_bytes(b"\x00" * 100)
    # Issue 23: checkpoints that do not fit a config, in run folders that --ckpt_path last finds.
    two_epochs = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    two_epochs.fit(DDPMModule(image_size=16, **TINY_UNET, lr_warmup_steps=1), ImageDataModule(data_dir=str(images), image_size=16, train_batch_size=4))  # fmt: skip
    two_epochs.save_checkpoint(root / "two-epochs.ckpt")
    (root / "run-last" / "checkpoints").mkdir(parents=True)
    trainer.save_checkpoint(root / "run-last" / "checkpoints" / "last.ckpt")
    classes = {"two": ["blue", "red"], "three": ["blue", "green", "red"], "renamed": ["cyan", "magenta"]}  # fmt: skip
    for name, names in classes.items():
        for label in names:
            write_images(root / name / label, 2, seed=len(label))
    labelled = ImageDataModule(data_dir=str(root / "two"), image_size=16, train_batch_size=4, label_column="label")  # fmt: skip
    labelled.discover_classes()
    conditional = DDPMModule(image_size=16, **TINY_UNET, lr_warmup_steps=1, num_classes=2, id2label=labelled.id2label)  # fmt: skip
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(conditional, labelled)
    (root / "run-conditional" / "checkpoints").mkdir(parents=True)
    trainer.save_checkpoint(root / "run-conditional" / "checkpoints" / "last.ckpt")
    (root / "a-file").write_text("not a folder")
    return {"root": root, "images": images, "corrupt": corrupt, "ckpt": root / "model.ckpt",
            "pipeline": root / "pipeline", "broken": root / "broken.ckpt",
            "two-epochs": root / "two-epochs.ckpt", "file": root / "a-file"}  # fmt: skip


def fit(files: dict[str, Path], *extra: str) -> list[str]:
    output = files["root"] / "run-mistakes"
    return ["fit", *TINY_OVERRIDES, "--model=DDPMModule", "--data=ImageDataModule",
            f"--data.init_args.data_dir={files['images']}", f"--output.output_dir={output}",
            "--trainer.max_epochs=1", *extra]  # fmt: skip


def resume(files: dict[str, Path], run: str, *extra: str) -> list[str]:
    """``fit --ckpt_path last`` into one of the fixture's run folders."""
    return fit(files, "--ckpt_path=last", f"--output.output_dir={files['root'] / run}", *extra)


def labelled(files: dict[str, Path], folder: str) -> list[str]:
    return [f"--data.init_args.data_dir={files['root'] / folder}", "--data.init_args.label_column=label"]  # fmt: skip


def sample(files: dict[str, Path], *extra: str) -> list[str]:
    out = str(files["root"] / "sampled")
    return ["sample", f"--source={files['pipeline']}", f"--output_dir={out}", *extra]


#: name -> (the command, given the files; words the one-paragraph error must contain)
MISTAKES = {
    "0 sampler steps": (lambda f: sample(f, "--num_inference_steps=0"), ["num_inference_steps", "at least 1"]),
    "negative sampler steps": (lambda f: sample(f, "--num_inference_steps=-3"), ["at least 1", "-3"]),
    "more steps than timesteps": (lambda f: sample(f, "--num_inference_steps=5000"), ["1000 training timesteps"]),
    "0 images to sample": (lambda f: sample(f, "--num_images=0"), ["num_images must be at least 1"]),
    "0 images to predict": (lambda f: ["predict", *TINY_OVERRIDES, "--model=DDPMModule", f"--ckpt_path={f['ckpt']}", "--predict.num_images=0"], ["num_images must be at least 1"]),
    "validate without held-out images": (lambda f: ["validate", *TINY_OVERRIDES, "--model=DDPMModule", "--data=ImageDataModule", f"--data.init_args.data_dir={f['images']}", f"--ckpt_path={f['ckpt']}"], ["val_fraction", "held-out"]),
    "max_epochs 0": (lambda f: fit(f, "--trainer.max_epochs=0"), ["nothing to train"]),
    "negative learning rate": (lambda f: fit(f, "--model.init_args.learning_rate=-1"), ["learning_rate must be at least 0"]),
    "batch size 0": (lambda f: fit(f, "--data.init_args.train_batch_size=0"), ["train_batch_size must be at least 1"]),
    "missing folder": (lambda f: fit(f, f"--data.init_args.data_dir={f['root'] / 'nowhere'}"), ["does not exist", "data_dir"]),
    "empty folder": (lambda f: fit(f, f"--data.init_args.data_dir={f['root'] / 'empty'}"), ["No images found"]),
    "corrupt image": (lambda f: fit(f, f"--data.init_args.data_dir={f['corrupt']}"), ["Could not decode", "image_001.png"]),
    "offline Hub dataset": (lambda f: fit(f, "--data.init_args.dataset_name=someone/no-such-dataset"), ["Could not load the dataset", "imagefolder"]),
    "wrong image column": (lambda f: fit(f, "--data.init_args.image_column=picture"), ["no column 'picture'", "image"]),
    "bad source": (lambda f: ["sample", "--source=nowhere/model.ckpt"], ["No checkpoint or pipeline folder"]),
    "sampler typo": (lambda f: fit(f, "--output.sampling.sampler=euler"), ["Unknown sampler 'euler'", "dpm-solver++"]),
    "image size the UNet cannot take": (lambda f: fit(f, "--data.init_args.image_size=31"), ["image_size 31", "multiple of 2"]),
    "fine-tune size mismatch": (lambda f: fit(f, f"--model.init_args.pretrained_model_name_or_path={f['pipeline']}", "--data.init_args.image_size=32"), ["takes 16 px images", "image_size: 16"]),
    "export over a pipeline": (lambda f: ["export", f"--ckpt_path={f['ckpt']}", f"--output_dir={f['pipeline']}"], ["already", "--overwrite true"]),
    "corrupt checkpoint": (lambda f: ["export", f"--ckpt_path={f['broken']}", f"--output_dir={f['root'] / 'x'}"], ["corrupt", "earlier epoch"]),
    "sampler without steps": (lambda f: ["evaluate", f"--source={f['pipeline']}", f"--data_dir={f['images']}", "--samplers=ddim"], ["name:steps", "ddim:50"]),
    # Issue 20: a resume with fewer epochs than the checkpoint has trained.
    "max_epochs below the checkpoint's": (lambda f: fit(f, f"--ckpt_path={f['two-epochs']}", "--trainer.max_epochs=1"), ["has trained 2 epochs", "--trainer.max_epochs above 2"]),
    # Issue 23: checkpoints that do not fit the config, and output places that cannot be used.
    "checkpoint of other widths": (lambda f: resume(f, "run-last", "--model.init_args.block_out_channels=[64, 128]"), ["another network", "block_out_channels: checkpoint (32, 64), this run (64, 128)"]),
    "conditional checkpoint, unconditional config": (lambda f: resume(f, "run-conditional"), ["another network", "num_classes: checkpoint 2, this run None"]),
    "checkpoint of 2 classes, data of 3": (lambda f: resume(f, "run-conditional", *labelled(f, "three")), ["num_classes: checkpoint 2, this run 3"]),
    "renamed classes on resume": (lambda f: resume(f, "run-conditional", *labelled(f, "renamed")), ["other data", "class names", "'blue'", "'cyan'", "--allow_data_changes true"]),
    "another image size on resume": (lambda f: fit(f, f"--ckpt_path={f['ckpt']}", "--data.init_args.image_size=32"), ["other data", "image_size: checkpoint 16, this run 32", "--allow_data_changes true"]),
    "ckpt_path a folder": (lambda f: fit(f, f"--ckpt_path={f['root']}"), ["is a folder, not a checkpoint file", "last.ckpt"]),
    "ckpt_path missing": (lambda f: fit(f, f"--ckpt_path={f['root'] / 'nowhere.ckpt'}"), ["No checkpoint at"]),
    "output_dir a file": (lambda f: fit(f, f"--output.output_dir={f['file']}"), ["is a file", "--output.output_dir"]),
    "output_dir under /proc": (lambda f: fit(f, "--output.output_dir=/proc/ddpm-run"), ["cannot be written", "/proc"]),
    "output_dir under /sys": (lambda f: fit(f, "--output.output_dir=/sys/ddpm-run"), ["cannot be written", "/sys"]),
    "output_dir inside a file": (lambda f: fit(f, f"--output.output_dir={f['file'] / 'run'}"), ["cannot be created", "is a file"]),
    "predictions inside a file": (lambda f: ["predict", *TINY_OVERRIDES, "--model=DDPMModule", f"--ckpt_path={f['ckpt']}", f"--output.output_dir={f['file']}"], ["cannot be created", "is a file"]),
    "export onto a file": (lambda f: ["export", f"--ckpt_path={f['ckpt']}", f"--output_dir={f['file']}"], ["is a file", "--output_dir"]),
    "sample into a file": (lambda f: ["sample", f"--source={f['pipeline']}", f"--output_dir={f['file']}"], ["is a file", "--output_dir"]),
    "data_dir an image file": (lambda f: fit(f, f"--data.init_args.data_dir={f['images'] / 'image_000.png'}"), ["is a file, not a folder", "data_dir"]),
}  # fmt: skip


def test_the_mistakes_wrote_nothing(files: dict[str, Path], results: dict) -> None:
    # Refused before any work: no grid, pipeline, checkpoint or image, and the file untouched.
    assert files["file"].read_text() == "not a folder"
    for run in ("run-last", "run-conditional"):
        assert sorted(p.name for p in (files["root"] / run).rglob("*") if p.is_file()) == [
            "last.ckpt"
        ]
    assert not (files["root"] / "run-mistakes" / "samples").exists()
    assert not (files["root"] / "run-mistakes" / "model_index.json").exists()
    assert not Path("/proc/ddpm-run").exists() and not Path("/sys/ddpm-run").exists()


def test_allow_data_changes_resumes_on_another_image_size(
    files: dict[str, Path], tmp_path: Path
) -> None:
    args = fit(files, f"--ckpt_path={files['ckpt']}", "--data.init_args.image_size=32", f"--output.output_dir={tmp_path / 'run'}", "--allow_data_changes=true")  # fmt: skip
    result = console(*args)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


#: One mistake per command and kind runs through the installed console script in its own
#: process; the rest go through the same ``console.main`` in this process (no interpreter start
#: and imports per case: two minutes less for the whole table).
THROUGH_THE_SCRIPT = ("0 sampler steps", "missing folder", "corrupt checkpoint", "output_dir under /proc", "checkpoint of other widths")  # fmt: skip


def console_in_process(*args: str) -> subprocess.CompletedProcess:
    """``console.main(args)`` here, with what it printed and its exit status."""
    from ddpm_lightning.console import main

    out, err = io.StringIO(), io.StringIO()
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "200"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(list(args))
        status = 0
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else 1
    finally:
        if columns is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = columns
    return subprocess.CompletedProcess(list(args), status, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def results(files: dict[str, Path]) -> dict[str, subprocess.CompletedProcess]:
    """Every mistake through ``console.main``; a few through the installed script itself."""
    with ThreadPoolExecutor(max_workers=1) as pool:  # the scripts run while the rest runs here
        scripts = {name: pool.submit(console, *MISTAKES[name][0](files)) for name in THROUGH_THE_SCRIPT}  # fmt: skip
        here = {
            name: console_in_process(*make(files))
            for name, (make, _) in MISTAKES.items()
            if name not in THROUGH_THE_SCRIPT
        }
        return {**here, **{name: future.result() for name, future in scripts.items()}}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_a_mistake_prints_one_error_paragraph_and_exits_2(name: str, results: dict) -> None:
    result = results[name]
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    error = result.stderr[result.stderr.index("error: ") :]
    for words in MISTAKES[name][1]:
        assert words in error, (words, error)
    assert "Does not validate against any of the Union subtypes" not in output


def test_the_traceback_variable_shows_where_it_was_raised(files: dict[str, Path]) -> None:
    result = console(*sample(files, "--num_inference_steps=0"), env={"DDPM_LIGHTNING_TRACEBACK": "1"})  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "InvalidSettingError" in result.stderr


def test_the_advice_to_overwrite_works_as_written(files: dict[str, Path]) -> None:
    result = console("export", f"--ckpt_path={files['ckpt']}", f"--output_dir={files['pipeline']}", "--overwrite", "true")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]


def test_top_level_help_lists_every_command() -> None:
    result = console("--help")
    assert result.returncode == 0
    for command in ("fit", "validate", "predict", "export", "sample", "evaluate"):
        assert f"  {command} " in result.stdout


#: Lines a normal run printed that users cannot act on (regular expressions of their text).
NOISE = [
    "gemm_4bit",  # bitsandbytes, pulled in by lightning[pytorch-extra]
    "💡 Tip",  # Lightning's litlogger/litmodels advertising
    "LeafSpec",  # a torch deprecation inside Lightning
    "FLOPs",  # the model summary's column, always 0 here
    "Total Flops",
    "v_num",  # the logger version on the progress bar
    "low cpu memory usage",  # diffusers without accelerate
    "Downloading data",  # datasets, for a local folder
    "Generating train split",
    "args parameter is intended",  # LightningCLI given sys.argv twice
    "Loading `train_dataloader` to estimate",
    "Skipping setting a default `ModelSummary`",
    "exists and is not empty",  # Lightning's checkpoint-folder warning: the guard covers it
]


def test_a_normal_fit_prints_no_known_noise(files: dict[str, Path], tmp_path: Path) -> None:
    pipeline_run = ["--model.init_args.pretrained_model_name_or_path", str(files["pipeline"])]
    args = fit(
        files,
        f"--output.output_dir={tmp_path / 'run'}",
        "--trainer.log_every_n_steps=1",
        *pipeline_run,
    )
    result = console(*(a for a in args if "enable_progress_bar" not in a))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert (tmp_path / "run" / "model_index.json").is_file()
    noisy = [line for line in output.splitlines() if any(noise in line for noise in NOISE)]
    assert not noisy, noisy
    # TensorBoard: the loss, and no hp_metric placeholder card stuck at -1.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = next((tmp_path / "run" / "logs").rglob("events.out.tfevents.*"))
    accumulator = EventAccumulator(str(events.parent))
    accumulator.Reload()
    assert "train/loss" in accumulator.Tags()["scalars"]
    assert "hp_metric" not in accumulator.Tags()["scalars"]
