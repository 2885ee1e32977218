"""Interrupts and faults: Ctrl-C, SIGTERM, full disks and killed exports leave a resumable run."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from diffusers import DDPMPipeline
from lightning.pytorch import Callback

from ddpm_lightning import DDPMModule
from ddpm_lightning.callbacks import ResumeCheckpoint
from ddpm_lightning.utils.atomic_export import (
    DiskFullError,
    recover_interrupted_export,
    save_pipeline_atomically,
)

from .conftest import TINY_UNET, fit_tiny, write_images

IMAGES = 16
BATCH_SIZE = 2
BATCHES_PER_EPOCH = IMAGES // BATCH_SIZE
MAX_EPOCHS = 6


@pytest.fixture(autouse=True)
def ctrl_c_as_in_a_terminal():
    """A shell starts background jobs with Ctrl-C ignored (and the handler then, rightly, stays
    out of the way); these tests need Ctrl-C as a terminal delivers it, in-process and in the
    console scripts they start (a Python handler becomes SIG_DFL across exec)."""
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


# ------------------------------------------------------------- the real console script
def fit_command(output_dir: Path, images: Path, *extra: str) -> list[str]:
    """``ddpm-lightning fit`` of a tiny UNet; no export or grid before the last epoch."""
    return [
        sys.executable,
        "-m",
        "ddpm_lightning",
        "fit",
        "--model=DDPMModule",
        "--data=ImageDataModule",
        "--model.init_args.block_out_channels=[32, 64]",
        "--model.init_args.layers_per_block=1",
        "--model.init_args.norm_num_groups=8",
        "--model.init_args.lr_warmup_steps=1",
        "--data.init_args.image_size=16",
        f"--data.init_args.train_batch_size={BATCH_SIZE}",
        f"--data.init_args.data_dir={images}",
        "--trainer.accelerator=cpu",
        "--trainer.precision=32-true",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.max_epochs={MAX_EPOCHS}",
        f"--output.output_dir={output_dir}",
        "--output.save_model_epochs=100",
        "--output.save_image_epochs=100",
        "--output.eval_batch_size=2",
        "--output.sampling.sampler=ddim",
        "--output.sampling.num_inference_steps=2",
        "--output.throughput_window=2",
        *extra,
    ]


def start(command: list[str], log: Path) -> subprocess.Popen:
    # One thread in every run: the weights are compared bit for bit, and two cores are shared.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with log.open("w") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)


def finish(process: subprocess.Popen, log: Path, expected: int = 0) -> None:
    returncode = process.wait(timeout=300)
    assert returncode == expected, log.read_text()[-3000:]


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


def assert_same_weights(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=0, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def run_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_images(tmp_path_factory.mktemp("interrupts") / "images", IMAGES)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, run_images: Path):
    """The same run without interruption, started in the background; call for its weights."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    log = folder / "fit.log"
    process = start(fit_command(folder / "run", run_images), log)
    loaded: dict = {}

    def final_weights() -> dict[str, torch.Tensor]:
        if not loaded:
            finish(process, log)
            checkpoint = torch.load(
                folder / "run" / "checkpoints" / "last.ckpt", weights_only=False
            )
            assert checkpoint["global_step"] == MAX_EPOCHS * BATCHES_PER_EPOCH
            loaded.update(checkpoint["state_dict"])
        return loaded

    yield final_weights
    if process.poll() is None:
        process.kill()
        process.wait()


def start_and_signal(
    output_dir: Path, images: Path, signum: int, delay: float = 0.0
) -> tuple[subprocess.Popen, Path]:
    """Start a fit and send it ``signum`` once epoch 0's ``last.ckpt`` exists."""
    log = output_dir.parent / f"{output_dir.name}.log"
    process = start(fit_command(output_dir, images), log)
    last = output_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists():
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no last.ckpt after epoch 0"
        time.sleep(0.02)
    time.sleep(delay)
    os.kill(process.pid, signum)
    return process, log


def test_ctrl_c_stops_after_an_epochs_last_ckpt_and_last_resumes_to_the_uninterrupted_weights(
    tmp_path: Path, run_images: Path, uninterrupted
) -> None:
    run = tmp_path / "run"
    process, log = start_and_signal(run, run_images, signal.SIGINT)
    finish(process, log, expected=1)  # Lightning's exit status after Ctrl-C
    last = run / "checkpoints" / "last.ckpt"
    stopped = torch.load(last, weights_only=False)
    # Stopped as epoch 1 or 2 began (InterruptHandler: after the previous epoch's last.ckpt),
    # well before the end of the run, and nothing mid-epoch.
    assert stopped["global_step"] in (BATCHES_PER_EPOCH, 2 * BATCHES_PER_EPOCH)
    assert not (run / "checkpoints" / "interrupted.ckpt").exists()
    assert "--ckpt_path last" in log.read_text()

    resumed_log = tmp_path / "resumed.log"
    finish(start(fit_command(run, run_images, "--ckpt_path=last"), resumed_log), resumed_log)
    assert torch.load(last, weights_only=False)["global_step"] == MAX_EPOCHS * BATCHES_PER_EPOCH
    assert_same_weights(weights(last), uninterrupted())
    assert DDPMPipeline.from_pretrained(run).unet.config.sample_size == 16


def test_sigterm_stops_after_a_batch_and_last_resumes_to_the_uninterrupted_weights(
    tmp_path: Path, run_images: Path, uninterrupted
) -> None:
    run = tmp_path / "run"
    process, log = start_and_signal(run, run_images, signal.SIGTERM, delay=0.1)
    finish(process, log, expected=143)  # 128 + SIGTERM: the console reports the signal
    checkpoints = run / "checkpoints"
    last_step = torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"]
    assert last_step < MAX_EPOCHS * BATCHES_PER_EPOCH
    interrupted = checkpoints / "interrupted.ckpt"
    if interrupted.exists():  # the usual case: the signal came mid-epoch
        step = torch.load(interrupted, weights_only=False)["global_step"]
        assert step % BATCHES_PER_EPOCH != 0 and step > last_step
        assert "interrupted.ckpt" in log.read_text()

    resumed_log = tmp_path / "resumed.log"
    finish(start(fit_command(run, run_images, "--ckpt_path=last"), resumed_log), resumed_log)
    assert_same_weights(weights(checkpoints / "last.ckpt"), uninterrupted())
    assert not interrupted.exists()  # superseded once an epoch finished


# ------------------------------------------------------------------ in-process runs
class SendSignal(Callback):
    """Send ``signum`` to this process ``times`` times after global step ``at_step``."""

    def __init__(self, signum: int, at_step: int, times: int = 1) -> None:
        self.signum, self.at_step, self.times = signum, at_step, times

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.at_step:
            for _ in range(self.times):
                signal.raise_signal(self.signum)


class RecordBatches(Callback):
    """The (epoch, batch_idx, first pixel values) of every training batch."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, tuple]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        first = tuple(batch["images"][:, 0, 0, 0].tolist())
        self.seen.append((trainer.current_epoch, batch_idx, first))


def fit(
    output_dir: Path,
    images: Path,
    callbacks: list[Callback] = (),
    max_epochs: int = 2,
    ckpt_path: str | None = None,
) -> L.Trainer:
    L.seed_everything(0)
    outputs = {"save_image_epochs": 100, "save_model_epochs": 100, "eval_batch_size": 2}
    outputs |= {"use_ema": False, "overwrite_output_dir": True}
    return fit_tiny(output_dir, images, list(callbacks), ckpt_path=ckpt_path,
                    train_batch_size=BATCH_SIZE, outputs=outputs, max_epochs=max_epochs,
                    accelerator="cpu")  # fmt: skip


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return write_images(tmp_path / "images", IMAGES)


def test_last_ckpt_after_every_epoch_whatever_save_model_epochs(
    tmp_path: Path, images: Path
) -> None:
    class CheckLast(Callback):
        def __init__(self) -> None:
            self.steps: list[int] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            last = tmp_path / "run" / "checkpoints" / "last.ckpt"
            if trainer.current_epoch > 0:
                self.steps.append(torch.load(last, weights_only=False)["global_step"])

    checker = CheckLast()
    fit(tmp_path / "run", images, [checker], max_epochs=3)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert checker.steps == [BATCHES_PER_EPOCH, 2 * BATCHES_PER_EPOCH]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt"]
    assert (checkpoints / "last.ckpt").stat().st_mode & 0o044  # not private to its writer


def test_second_ctrl_c_stops_after_the_batch_and_saves_interrupted_ckpt(
    tmp_path: Path, images: Path
) -> None:
    step = BATCHES_PER_EPOCH + 3
    with pytest.raises(SystemExit) as stopped:  # Lightning: sys.exit(1) after Ctrl-C
        fit(tmp_path / "run", images, [SendSignal(signal.SIGINT, at_step=step, times=2)])
    assert stopped.value.code == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    checkpoints = tmp_path / "run" / "checkpoints"
    assert torch.load(checkpoints / "interrupted.ckpt", weights_only=False)["global_step"] == step
    last = torch.load(checkpoints / "last.ckpt", weights_only=False)
    assert last["global_step"] == BATCHES_PER_EPOCH
    assert not [p for p in checkpoints.iterdir() if p.name.endswith(".tmp")]


def test_third_ctrl_c_stops_at_once_and_saves_nothing(tmp_path: Path, images: Path) -> None:
    with pytest.raises(SystemExit):
        fit(tmp_path / "run", images, [SendSignal(signal.SIGINT, at_step=3, times=3)])
    checkpoints = tmp_path / "run" / "checkpoints"
    assert not checkpoints.exists() or not list(checkpoints.iterdir())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_mid_epoch_resume_starts_the_epochs_batches_over(tmp_path: Path, images: Path) -> None:
    """Why ``interrupted.ckpt`` is not a ``last`` candidate: Lightning 2.6 resumes our
    DataLoader (not ``state_dict``-able) from the epoch's first batch, for the batches that
    were left. Should this fail, the loader became resumable: revisit ResumeCheckpoint."""
    step = BATCHES_PER_EPOCH + 3
    whole = RecordBatches()
    fit(tmp_path / "whole", images, [whole])
    with pytest.raises(SystemExit):
        fit(tmp_path / "run", images, [SendSignal(signal.SIGTERM, at_step=step)])
    interrupted = tmp_path / "run" / "checkpoints" / "interrupted.ckpt"
    assert torch.load(interrupted, weights_only=False)["global_step"] == step
    resumed = RecordBatches()
    with pytest.warns(UserWarning, match="not resumable"):
        trainer = fit(tmp_path / "run", images, [resumed], ckpt_path=str(interrupted))
    assert trainer.global_step == 2 * BATCHES_PER_EPOCH
    epoch_1 = [pixels for epoch, _, pixels in whole.seen if epoch == 1]
    assert [idx for _, idx, _ in resumed.seen] == list(range(3, BATCHES_PER_EPOCH))
    assert [pixels for _, _, pixels in resumed.seen] == epoch_1[: BATCHES_PER_EPOCH - 3]


def test_a_full_disk_gives_one_clear_error_and_keeps_the_last_checkpoint(
    tmp_path: Path, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = torch.save
    calls: list[object] = []

    def save_until_the_disk_is_full(obj, file, *args, **kwargs):
        calls.append(file)
        if len(calls) == 1:  # epoch 0's last.ckpt
            return real_save(obj, file, *args, **kwargs)
        file.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    stale = checkpoints / ".last.ckpt.killed01.tmp"  # a write killed in an earlier run
    stale.write_bytes(b"partial")
    monkeypatch.setattr(torch, "save", save_until_the_disk_is_full)
    with pytest.raises(DiskFullError, match="No space left on device") as raised:
        fit(tmp_path / "run", images, max_epochs=3)
    monkeypatch.undo()
    message = str(raised.value)
    assert "last.ckpt is unchanged" in message and "--ckpt_path last" in message
    assert raised.value.errno == errno.ENOSPC
    assert len(calls) == 2  # no second save attempt when training stopped
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt"]
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"] == 8


def test_checkpoints_are_written_atomically_unless_a_custom_checkpoint_io_is_given(
    tmp_path: Path, image_folder: Path
) -> None:
    from lightning.pytorch.plugins import TorchCheckpointIO

    from ddpm_lightning.cli import run
    from ddpm_lightning.plugins import AtomicCheckpointIO
    from ddpm_lightning.training_outputs import TrainingOutputs

    from .test_cli import tiny_command

    class CustomIO(TorchCheckpointIO):
        pass

    outputs = TrainingOutputs(output_dir=tmp_path / "run")
    assert [type(plugin) for plugin in outputs.plugins()] == [AtomicCheckpointIO]
    custom = CustomIO()
    assert outputs.plugins([custom]) == [custom]  # a user's CheckpointIO is kept, unchanged
    # ... and the ResumeCheckpoint leaves the strategy's checkpoint IO alone in setup.
    for given, expected in ((None, AtomicCheckpointIO), (custom, CustomIO)):
        callbacks = outputs.callbacks()
        trainer = L.Trainer(
            accelerator="cpu",
            callbacks=callbacks,
            plugins=outputs.plugins([given] if given else None),
            logger=False,
        )
        resume = next(cb for cb in callbacks if isinstance(cb, ResumeCheckpoint))
        resume.setup(trainer, DDPMModule(image_size=16, **TINY_UNET), "fit")
        assert type(trainer.strategy.checkpoint_io) is expected
        assert trainer.strategy.checkpoint_io is given or given is None
    # Through the CLI: atomic by default, a given CheckpointIO plugin as it is.
    one_batch = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1"]
    for given, expected in (
        ([], AtomicCheckpointIO),
        (["--trainer.plugins=lightning.pytorch.plugins.TorchCheckpointIO"], TorchCheckpointIO),
    ):
        run_dir = tmp_path / f"cli-{expected.__name__}"
        cli = run(tiny_command("fit", image_folder, run_dir, *one_batch, *given))
        assert type(cli.trainer.strategy.checkpoint_io) is expected
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()


# ---------------------------------------------------------------------- exports
def tiny_pipeline() -> DDPMPipeline:
    torch.manual_seed(0)
    return DDPMModule(image_size=16, **TINY_UNET).to_pipeline()


def tree(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_an_export_killed_between_renames_is_recovered_at_the_next_start(
    tmp_path: Path,
) -> None:
    target = tmp_path / "run"
    save_pipeline_atomically(tiny_pipeline(), target, overwrite=False)
    (target / "samples").mkdir()
    (target / "samples" / "0000.png").write_bytes(b"png")
    before = tree(target)
    # kill -9 midway through the swap: unet moved aside, its replacement not yet moved in.
    staging, backup = target / ".export-staging-k1ll3d", target / ".export-previous-k1ll3d"
    staging.mkdir()
    (staging / "unet").mkdir()
    (staging / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"new")
    backup.mkdir()
    os.replace(target / "unet", backup / "unet")
    # ... and an earlier export killed while writing its staging folder.
    (target / ".export-staging-0ld3r").mkdir()
    (target / ".export-staging-0ld3r" / "scheduler").mkdir()

    recover_interrupted_export(target)
    assert tree(target) == before
    assert DDPMPipeline.from_pretrained(target).unet.config.sample_size == 16

    backup.mkdir()  # leftovers again, this time cleaned by the next export itself
    staging.mkdir()
    with pytest.raises(FileExistsError):
        save_pipeline_atomically(tiny_pipeline(), target, overwrite=False)
    assert not [p for p in target.iterdir() if p.name.startswith(".export")]
    save_pipeline_atomically(tiny_pipeline(), target, overwrite=True)
    assert not [p for p in target.iterdir() if p.name.startswith(".export")]


@pytest.mark.parametrize(
    "disk_full",
    [
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
        # safetensors' own error type, with the OS message in its text
        RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),
    ],
    ids=["oserror", "safetensors"],
)
def test_a_full_disk_during_an_export_keeps_the_previous_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, disk_full: Exception
) -> None:
    target = tmp_path / "run"
    save_pipeline_atomically(tiny_pipeline(), target, overwrite=False)
    before = tree(target)

    def fill_the_disk(self, save_directory, **kwargs):
        (Path(save_directory) / "unet").mkdir(parents=True)
        (Path(save_directory) / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"h")
        raise disk_full

    monkeypatch.setattr(DDPMPipeline, "save_pretrained", fill_the_disk)
    with pytest.raises(DiskFullError, match="No space left on device.*is unchanged"):
        save_pipeline_atomically(tiny_pipeline(), target, overwrite=True)
    assert tree(target) == before


def test_last_ckpt_every_n_train_steps_within_long_epochs(
    tmp_path: Path, image_folder: Path
) -> None:
    class StopAtStep(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step == 5:
                raise RuntimeError("simulated crash at step 5")

    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger("lightning.pytorch").addHandler(handler)
    # 12 images in batches of 2: 6 steps an epoch; last.ckpt after steps 2 and 4, mid-epoch.
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_tiny(tmp_path / "run", image_folder, [StopAtStep()], train_batch_size=2,
                 max_epochs=2, outputs={"checkpoint_every_n_train_steps": 2})  # fmt: skip
    logging.getLogger("lightning.pytorch").removeHandler(handler)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 4
    assert "resumes from step 4 (last.ckpt, mid-epoch" in "".join(messages)
    trainer = fit_tiny(tmp_path / "run", image_folder, [], train_batch_size=2, max_epochs=2,
                       ckpt_path="last", outputs={"checkpoint_every_n_train_steps": 2})  # fmt: skip
    assert trainer.global_step == 12
