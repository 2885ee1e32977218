"""``ResumeCheckpoint``: the ``last.ckpt`` that ``--ckpt_path last`` resumes, and Ctrl-C."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

from ddpm_lightning.callbacks.epoch_schedule import is_last_epoch
from ddpm_lightning.errors import DiskFullError, is_disk_full
from ddpm_lightning.private_apis import last_saved_step
from ddpm_lightning.utils.atomic_files import write_atomically

#: The temporary files of ``write_atomically`` for a checkpoint: ``.last.ckpt.k3j9_x2a.tmp``.
_CHECKPOINT_TEMPORARY = re.compile(r"^\..+\.ckpt\.[^.]+\.tmp$")

_PRESS_MESSAGES = {
    1: "\nCtrl-C: stopping at the end of this epoch, which --ckpt_path last resumes exactly. "
    "Press Ctrl-C again to stop after this batch.\n",
    2: "\nCtrl-C again: stopping after this batch, saving checkpoints/interrupted.ckpt. "
    "Press Ctrl-C once more to stop at once, saving nothing.\n",
}


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` streaming ``torch.save`` through :func:`write_atomically`."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        """Write ``checkpoint`` atomically (remote paths: as Lightning); DiskFullError if full."""
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        try:
            write_atomically(path, lambda file: torch.save(checkpoint, file))
        except Exception as error:
            if not is_disk_full(error):
                raise
            path = Path(path)
            kept = "no partial file was left"
            if path.exists():
                kept = f"the earlier {path.name} is unchanged"
            raise DiskFullError(
                errno.ENOSPC,
                f"No space left on device while saving the checkpoint {str(path)!r}: {kept}. Free "
                f"some space (older epochNNNN.ckpt files in {str(path.parent)!r} can go), then "
                "resume with --ckpt_path last (ckpt_path='last' in Python).",
            ) from error


class TrainingInterrupted(KeyboardInterrupt):
    """Stops fit where Ctrl-C asked; a ``KeyboardInterrupt``, so Lightning shuts down as usual."""


def remove_checkpoint_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete what checkpoint writes killed midway left (one writer per folder: rank zero)."""
    stale = [path for path in Path(folder).glob("*.tmp") if _CHECKPOINT_TEMPORARY.match(path.name)]
    stale = [path for path in stale if path.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class ResumeCheckpoint(ModelCheckpoint):
    """``checkpoints/last.ckpt`` after every epoch, written atomically; Ctrl-C stops cleanly.

    Ctrl-C once stops after the epoch's ``last.ckpt``, twice after the batch, thrice at once. A
    mid-epoch stop saves ``interrupted.ckpt`` (no ``last`` candidate: Lightning restarts the
    epoch's batches), deleted once a later epoch finishes.

    Args:
        dirpath: the checkpoints folder (``output_dir/checkpoints``).
        every_n_train_steps: also refresh ``last.ckpt`` every N steps in an epoch (inexact resume).
    """

    def __init__(self, dirpath: str | os.PathLike, every_n_train_steps: int | None = None) -> None:
        every_epoch = {"every_n_epochs": 1, "save_on_train_epoch_end": True, "save_top_k": 1}
        last = self.CHECKPOINT_NAME_LAST
        super().__init__(str(dirpath), last, enable_version_counter=False, **every_epoch)
        assert self.dirpath is not None
        self.last_path = os.path.join(self.dirpath, last + self.FILE_EXTENSION)
        self.interrupted_path = os.path.join(self.dirpath, "interrupted" + self.FILE_EXTENSION)
        self.every_n_train_steps_last = every_n_train_steps
        self._mid_epoch_step: int | None = None
        self._presses = 0
        self._start_step: int | None = None
        self._previous_handler: Any = None
        self._announce = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Install the atomic checkpoint writer and delete killed writes' temporary files."""
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if trainer.is_global_zero:
            remove_checkpoint_temporaries(self.dirpath)
        self._presses, self._start_step = 0, None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Take over Ctrl-C, unless SIGINT is ignored (nohup) or the application handles it."""
        super().on_train_start(trainer, pl_module)
        self._presses, self._start_step = 0, trainer.global_step
        main_thread = threading.current_thread() is threading.main_thread()
        if main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._announce = trainer.is_global_zero
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Refresh ``last.ckpt`` every N steps if asked; stop here on the second Ctrl-C."""
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        every, step = self.every_n_train_steps_last, trainer.global_step
        last_batch = batch_idx + 1 >= trainer.num_training_batches  # saved at the epoch's end
        if every and step % every == 0 and step not in (0, self._mid_epoch_step) and not last_batch:
            trainer.save_checkpoint(self.last_path)
            self._mid_epoch_step = step  # once per step, also under gradient accumulation
        if _agreed(trainer, self._presses >= 2):
            raise TrainingInterrupted("Ctrl-C twice")

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Save ``last.ckpt``; then stop if Ctrl-C was pressed during the epoch."""
        super().on_train_epoch_end(trainer, pl_module)
        if self._saved_this_step(trainer):
            trainer.strategy.remove_checkpoint(self.interrupted_path)
        if _agreed(trainer, self._presses >= 1) and not is_last_epoch(trainer):
            raise TrainingInterrupted("Ctrl-C")

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Give Ctrl-C back: there is no epoch left to finish."""
        super().on_train_end(trainer, pl_module)
        self._restore_sigint_handler()

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        """Save a mid-epoch stop as ``interrupted.ckpt``, and say how to resume."""
        self._restore_sigint_handler()
        if self._start_step is None or trainer.sanity_checking or trainer.fast_dev_run:
            return  # training had not started: nothing to keep
        if trainer.global_step == self._start_step or is_disk_full(exception):
            return  # nothing trained since the run's checkpoint, or a save would fail too
        stopped = f"Training stopped ({_describe(exception)}) at step {trainer.global_step}"
        if self._saved_this_step(trainer):
            rank_zero_info(
                f"{stopped}, just after saving {self.last_path!r}: resume with --ckpt_path "
                "last (ckpt_path='last' in Python)."
            )
            return
        stopped += f", in epoch {trainer.current_epoch}"
        mid_epoch_last = (self._mid_epoch_step or -1) > (last_saved_step(self) or -1)
        last = "--ckpt_path last " + (
            "starts over (no epoch has finished yet)."
            if not os.path.exists(self.last_path)
            else f"resumes from step {self._mid_epoch_step} (last.ckpt, mid-epoch: close to, "
            "not exactly, an uninterrupted run)."
            if mid_epoch_last
            else "resumes exactly from the last finished epoch (last.ckpt)."
        )
        # Under DDP only a stop that every rank takes together may save: a save waits for all.
        together = isinstance(exception, (TrainingInterrupted, SIGTERMException))
        if self._presses >= 3 or (trainer.world_size > 1 and not together):
            rank_zero_info(f"{stopped}; nothing saved. {last}")
            return
        try:
            trainer.save_checkpoint(self.interrupted_path, weights_only=False)
        except Exception as error:  # never hide the exception that stopped training
            rank_zero_warn(f"{stopped}; saving {self.interrupted_path!r} failed: {error}")
            return
        rank_zero_info(
            f"{stopped}, and saved {self.interrupted_path!r}. {last} --ckpt_path "
            f"{self.interrupted_path} keeps this epoch's batches, but Lightning starts the "
            "epoch's data over, so its weights will differ from an uninterrupted run's."
        )

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Give Ctrl-C back."""
        super().teardown(trainer, pl_module, stage)
        self._restore_sigint_handler()

    def _saved_this_step(self, trainer: Trainer) -> bool:
        return last_saved_step(self) == trainer.global_step

    def _restore_sigint_handler(self) -> None:
        # Only if ours is in place: Lightning ignores SIGINT while it shuts down after Ctrl-C.
        main_thread = threading.current_thread() is threading.main_thread()
        if main_thread and signal.getsignal(signal.SIGINT) == self._on_sigint:
            signal.signal(signal.SIGINT, self._previous_handler)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self._presses += 1
        if self._presses >= 3:
            self._restore_sigint_handler()
            raise TrainingInterrupted("Ctrl-C three times")
        if self._announce:  # os.write: print() here could collide with the interrupted write
            with contextlib.suppress(OSError, ValueError):
                os.write(sys.stderr.fileno(), _PRESS_MESSAGES[self._presses].encode())


def _agreed(trainer: Trainer, decision: bool) -> bool:
    """``decision`` on any rank, on every rank (one small all-reduce under DDP)."""
    if trainer.world_size > 1:
        return trainer.strategy.reduce_boolean_decision(decision, all=False)
    return decision


def _describe(exception: BaseException) -> str:
    if isinstance(exception, SIGTERMException):
        return "SIGTERM"
    if isinstance(exception, KeyboardInterrupt):
        return str(exception) or "Ctrl-C"
    return f"{type(exception).__name__}: {exception}"
