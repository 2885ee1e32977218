"""Work that must survive a second run or a signal: the folder lock, interrupted sampling."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from ddpm_lightning import DDPMModule
from ddpm_lightning.utils.run_lock import LOCK_NAME, OutputFolderBusyError, RunLock

from .conftest import TINY_UNET
from .test_cli import TINY_OVERRIDES

SCRIPT = str(Path(sys.executable).with_name("ddpm-lightning"))


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=300)


def fit_args(images: Path, output_dir: Path) -> list[str]:
    return ["fit", *TINY_OVERRIDES, "--model=DDPMModule", "--data=ImageDataModule",
            f"--data.init_args.data_dir={images}", f"--output.output_dir={output_dir}",
            "--trainer.max_epochs=1"]  # fmt: skip


def test_a_second_fit_into_a_locked_folder_is_refused_and_a_stale_lock_is_not(
    tmp_path: Path, image_folder: Path
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lock = {"pid": holder.pid, "host": socket.gethostname()}
        (run_dir / LOCK_NAME).write_text(json.dumps(lock))
        refused = run(*fit_args(image_folder, run_dir))
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert "Traceback" not in refused.stderr
        assert f"Another run (pid {holder.pid}" in refused.stderr
        assert not (run_dir / "checkpoints").exists() and not (run_dir / "samples").exists()
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone: its lock is stale and the next fit takes it over, then gives it back.
    finished = run(*fit_args(image_folder, run_dir))
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not (run_dir / LOCK_NAME).exists()


def test_the_lock_refuses_a_live_holder_in_process(tmp_path: Path) -> None:
    first = RunLock(tmp_path)
    first.acquire()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(
            json.dumps({"pid": holder.pid, "host": socket.gethostname()})
        )
        try:
            RunLock(tmp_path).acquire()
        except OutputFolderBusyError as error:
            assert str(holder.pid) in str(error)
        else:
            raise AssertionError("a live holder's lock was taken")
    finally:
        holder.kill()
        holder.wait()


def test_sigterm_during_sample_keeps_the_finished_batches(tmp_path: Path) -> None:
    pipeline = tmp_path / "pipeline"
    DDPMModule(image_size=16, **TINY_UNET).save_pretrained(pipeline)
    out = tmp_path / "samples"
    command = [SCRIPT, "sample", f"--source={pipeline}", f"--output_dir={out}",
               "--num_images=12", "--batch_size=2", "--sampler=ddpm",
               "--num_inference_steps=400", "--device=cpu"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while len(list(out.glob("*.png"))) < 2:  # the first batch is on disk
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no batch written"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    written = sorted(out.glob("*.png"))
    assert 2 <= len(written) < 12 and len(written) % 2 == 0  # whole batches only
    assert f"wrote {len(written)} of 12 images" in stderr
    assert [p.name for p in written] == [f"{i:05d}.png" for i in range(len(written))]
    assert not (out / "grid.png").exists()
    for path in written:
        assert Image.open(path).size == (16, 16)
