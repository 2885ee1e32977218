"""``ResumeCheckpoint``: the ``last.ckpt`` that ``--ckpt_path last`` resumes, always whole.

``last.ckpt`` is written after every epoch whatever the periodic checkpoints do, through a
``CheckpointIO`` that never gives a partial file the final name, and Ctrl-C stops training
where a resume continues exactly.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

from ddpm_lightning.callbacks.epoch_schedule import is_last_epoch
from ddpm_lightning.private_apis import last_saved_step
from ddpm_lightning.utils.atomic_checkpoint_io import AtomicCheckpointIO
from ddpm_lightning.utils.atomic_export import is_disk_full

__all__ = ["AtomicCheckpointIO", "ResumeCheckpoint", "TrainingInterrupted"]

#: The temporary files of ``write_atomically`` for a checkpoint: ``.last.ckpt.k3j9_x2a.tmp``.
_CHECKPOINT_TEMPORARY = re.compile(r"^\..+\.ckpt\.[^.]+\.tmp$")

_PRESS_MESSAGES = {
    1: "\nCtrl-C: training stops at the end of this epoch, once last.ckpt is saved, so that "
    "--ckpt_path last resumes it exactly. Press Ctrl-C again to stop after the current "
    "batch instead.\n",
    2: "\nCtrl-C again: training stops after the current batch and saves "
    "checkpoints/interrupted.ckpt. Press Ctrl-C once more to stop at once, saving nothing.\n",
}


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by :class:`ResumeCheckpoint` to stop fit after Ctrl-C, where it chose to.

    A ``KeyboardInterrupt``, so Lightning shuts down as for Ctrl-C: ``on_exception`` hooks,
    then exit status 1.
    """


def remove_checkpoint_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that checkpoint writes killed midway left in ``folder``.

    One write at a time per folder is assumed (a Trainer saves from global rank zero only).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [
        path
        for path in folder.iterdir()
        if _CHECKPOINT_TEMPORARY.match(path.name) and path.is_file()
    ]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class ResumeCheckpoint(ModelCheckpoint):
    """``checkpoints/last.ckpt`` after every epoch, and stops that ``last`` resumes exactly.

    A ``ModelCheckpoint`` that keeps one file, ``last.ckpt``, rewritten at the end of every
    training epoch whatever the periodic checkpoints do; ``ckpt_path="last"`` (``--ckpt_path
    last``) resumes from it. It also:

    * installs :class:`AtomicCheckpointIO` for every checkpoint of the run, when the strategy
      uses Lightning's default ``TorchCheckpointIO``, and deletes the temporary files of
      checkpoint writes that were killed;
    * turns Ctrl-C (SIGINT) into a clean stop. The first press lets the epoch finish and
      stops once ``last.ckpt`` is saved, so the resumed run ends with the weights of an
      uninterrupted one. The second stops after the current batch; the third at once;
    * saves ``checkpoints/interrupted.ckpt`` when training stops mid-epoch (the second Ctrl-C,
      a SIGTERM, which Lightning turns into a stop after the current batch, or an error).

    ``interrupted.ckpt`` is not a ``last`` candidate: Lightning cannot resume this project's
    DataLoader mid-epoch (it starts the epoch's batches over and stops after the number that
    was left), so resuming from it gives other weights than an uninterrupted run. ``last``
    resumes from the end of the last finished epoch instead, and the stop message says both.
    ``interrupted.ckpt`` is deleted once a later epoch has finished.

    Args:
        dirpath: the checkpoints folder (``output_dir/checkpoints``).
    """

    INTERRUPTED_NAME = "interrupted"

    def __init__(self, dirpath: str | os.PathLike) -> None:
        super().__init__(
            dirpath=str(dirpath),
            filename=self.CHECKPOINT_NAME_LAST,
            save_top_k=1,
            every_n_epochs=1,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        )
        self._presses = 0
        self._start_step: int | None = None
        self._previous_handler: Any = None
        self._announce = False

    @property
    def interrupted_path(self) -> str:
        """Where a mid-epoch stop is saved."""
        assert self.dirpath is not None
        return os.path.join(self.dirpath, self.INTERRUPTED_NAME + self.FILE_EXTENSION)

    @property
    def last_path(self) -> str:
        """The file ``ckpt_path="last"`` resumes from."""
        assert self.dirpath is not None
        return os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Install the atomic checkpoint writer and delete killed writes' temporary files."""
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if trainer.is_global_zero:
            assert self.dirpath is not None
            remove_checkpoint_temporaries(self.dirpath)
        self._presses = 0
        self._start_step = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Take over Ctrl-C while the training loop runs."""
        super().on_train_start(trainer, pl_module)
        self._start_step = trainer.global_step
        self._install_sigint_handler(trainer)

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Stop after this batch on the second Ctrl-C (every rank at the same batch)."""
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if _agreed(trainer, self._presses >= 2):
            raise TrainingInterrupted("Ctrl-C twice: stopped after the current batch.")

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Save ``last.ckpt``; then stop if Ctrl-C was pressed during the epoch."""
        super().on_train_epoch_end(trainer, pl_module)
        if self._saved_this_step(trainer):
            trainer.strategy.remove_checkpoint(self.interrupted_path)
        if _agreed(trainer, self._presses >= 1) and not is_last_epoch(trainer):
            raise TrainingInterrupted("Ctrl-C: stopped at the end of the epoch.")

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Give Ctrl-C back: there is no epoch left to finish."""
        super().on_train_end(trainer, pl_module)
        self._restore_sigint_handler()

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        """Save a mid-epoch stop as ``interrupted.ckpt``, and say how to resume."""
        self._restore_sigint_handler()
        started = self._start_step
        if started is None or trainer.sanity_checking or trainer.fast_dev_run:
            return  # training had not started: nothing to keep
        if trainer.global_step == started:
            return  # nothing trained since the checkpoint this run started from
        if is_disk_full(exception):
            return  # the error says it all, and a save would fail as well
        stopped = f"Training stopped ({_describe(exception)}) at step {trainer.global_step}"
        if self._saved_this_step(trainer):
            rank_zero_info(
                f"{stopped}, the end of an epoch, just after saving {self.last_path!r}: resume "
                "with --ckpt_path last (ckpt_path='last' in Python)."
            )
            return
        stopped += f", in epoch {trainer.current_epoch}"
        resume_last = (
            "resumes from the end of the last finished epoch (last.ckpt) and ends with the "
            "weights of an uninterrupted run"
            if os.path.exists(self.last_path)
            else "starts over (no epoch has finished yet)"
        )
        if self._presses >= 3:
            rank_zero_info(f"{stopped}; nothing saved. --ckpt_path last {resume_last}.")
            return
        if trainer.world_size > 1 and not isinstance(
            exception, (TrainingInterrupted, SIGTERMException)
        ):
            # Only the stops that every rank takes together may save: a save waits for all.
            rank_zero_info(f"{stopped}. --ckpt_path last {resume_last}.")
            return
        try:
            trainer.save_checkpoint(self.interrupted_path, weights_only=False)
        except Exception as error:  # never hide the exception that stopped training
            rank_zero_warn(f"{stopped}; saving {self.interrupted_path!r} failed: {error}")
            return
        rank_zero_info(
            f"{stopped}, and saved {self.interrupted_path!r}. --ckpt_path last "
            f"{resume_last}. --ckpt_path {self.interrupted_path} keeps the batches trained in "
            "this epoch, but Lightning cannot continue the epoch's data where it stopped (it "
            "starts the epoch's batches over), so its weights will differ from an "
            "uninterrupted run's."
        )

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Give Ctrl-C back (Lightning's teardown restores it too)."""
        super().teardown(trainer, pl_module, stage)
        self._restore_sigint_handler()

    # ----------------------------------------------------------------- helpers
    def _saved_this_step(self, trainer: Trainer) -> bool:
        return last_saved_step(self) == trainer.global_step

    def _install_sigint_handler(self, trainer: Trainer) -> None:
        self._presses = 0
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return  # SIGINT ignored (nohup, background jobs) or handled by the application
        self._announce = trainer.is_global_zero
        self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def _restore_sigint_handler(self) -> None:
        if self._previous_handler is None:
            return
        if threading.current_thread() is threading.main_thread():
            # Lightning ignores SIGINT while it shuts down after Ctrl-C: leave that in place.
            if signal.getsignal(signal.SIGINT) == self._on_sigint:
                signal.signal(signal.SIGINT, self._previous_handler)
        self._previous_handler = None

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self._presses += 1
        if self._presses >= 3:
            self._restore_sigint_handler()
            raise TrainingInterrupted("Ctrl-C three times: stopped at once.")
        if self._announce:
            # os.write: print() from a signal handler can collide with the interrupted write.
            try:
                os.write(sys.stderr.fileno(), _PRESS_MESSAGES[self._presses].encode())
            except (OSError, ValueError):
                pass


def _agreed(trainer: Trainer, decision: bool) -> bool:
    """``decision`` on any rank, on every rank (one small all-reduce under DDP)."""
    if trainer.world_size > 1:
        return trainer.strategy.reduce_boolean_decision(decision, all=False)
    return decision


def _describe(exception: BaseException) -> str:
    if isinstance(exception, TrainingInterrupted):
        return str(exception).split(":")[0]
    if isinstance(exception, SIGTERMException):
        return "SIGTERM"
    if isinstance(exception, KeyboardInterrupt):
        return "Ctrl-C"
    return f"{type(exception).__name__}: {exception}"
