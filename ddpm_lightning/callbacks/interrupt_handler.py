"""``InterruptHandler``: Ctrl-C stops where a resume is exact; other stops keep their work."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

from ddpm_lightning.callbacks.resume_checkpoint import ResumeCheckpoint
from ddpm_lightning.errors import is_disk_full

_PRESS_MESSAGES = {
    1: "\nCtrl-C: stopping at the end of this epoch, which --ckpt_path last resumes exactly. "
    "Press Ctrl-C again to stop after this batch.\n",
    2: "\nCtrl-C again: stopping after this batch, saving checkpoints/interrupted.ckpt. "
    "Press Ctrl-C once more to stop at once, saving nothing.\n",
}


class TrainingInterrupted(KeyboardInterrupt):
    """Stops fit where Ctrl-C asked; a ``KeyboardInterrupt``, so Lightning shuts down as usual."""


class InterruptHandler(Callback):
    """Ctrl-C once stops after the epoch's ``last.ckpt``, twice after the batch, thrice at once.

    A mid-epoch stop (the second Ctrl-C, SIGTERM, an error) saves ``interrupted.ckpt`` next to
    the :class:`ResumeCheckpoint`'s ``last.ckpt`` and says how to resume. Needs a
    ``ResumeCheckpoint`` among the Trainer's callbacks.
    """

    def __init__(self) -> None:
        self._presses = 0
        self._start_step: int | None = None
        self._previous_handler: Any = None
        self._announce = False
        self._resume: ResumeCheckpoint | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Find the ``last.ckpt`` callback whose checkpoints the advice names."""
        resume = [cb for cb in trainer.callbacks if isinstance(cb, ResumeCheckpoint)]
        if stage == "fit" and not resume:
            raise RuntimeError("InterruptHandler needs a ResumeCheckpoint callback too.")
        self._resume = resume[0] if resume else None
        self._presses, self._start_step = 0, None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Take over Ctrl-C, unless SIGINT is ignored (nohup) or the application handles it."""
        self._presses, self._start_step = 0, trainer.global_step
        main_thread = threading.current_thread() is threading.main_thread()
        if main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._announce = trainer.is_global_zero
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """After one Ctrl-C: stop now, the last epoch's ``last.ckpt`` being saved already.

        Here rather than at the epoch's end, where the checkpoint callbacks run after this one.
        """
        if _agreed(trainer, self._presses >= 1):
            raise TrainingInterrupted("Ctrl-C")

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """After a second Ctrl-C: stop before this batch, the previous one being finished.

        Here rather than at the batch's end, where the callbacks after this one (a mid-epoch
        ``last.ckpt``, the user's) would still run, and a Ctrl-C in them would go unseen.
        """
        if _agreed(trainer, self._presses >= 2):
            raise TrainingInterrupted("Ctrl-C twice")

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Give Ctrl-C back: there is no epoch left to finish."""
        self._restore_sigint_handler()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Give Ctrl-C back."""
        self._restore_sigint_handler()

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        """Save a mid-epoch stop as ``interrupted.ckpt``, and say how to resume."""
        self._restore_sigint_handler()
        resume = self._resume
        if resume is None or self._start_step is None or trainer.sanity_checking:
            return  # training had not started: nothing to keep
        if trainer.fast_dev_run or trainer.global_step == self._start_step:
            return  # nothing trained since the run's checkpoint
        if is_disk_full(exception):
            return  # a save would fail too
        stopped = f"Training stopped ({_describe(exception)}) at step {trainer.global_step}"
        if resume.saved_at(trainer.global_step):
            rank_zero_info(
                f"{stopped}, just after saving {resume.last_path!r}: resume with --ckpt_path "
                "last (ckpt_path='last' in Python)."
            )
            return
        stopped += f", in epoch {trainer.current_epoch}"
        advice = resume.resume_advice()
        # Under DDP only a stop that every rank takes together may save: a save waits for all.
        together = isinstance(exception, (TrainingInterrupted, SIGTERMException))
        if self._presses >= 3 or (trainer.world_size > 1 and not together):
            rank_zero_info(f"{stopped}; nothing saved. {advice}")
            return
        try:
            trainer.save_checkpoint(resume.interrupted_path, weights_only=False)
        except Exception as error:  # never hide the exception that stopped training
            rank_zero_warn(f"{stopped}; saving {resume.interrupted_path!r} failed: {error}")
            return
        rank_zero_info(
            f"{stopped}, and saved {resume.interrupted_path!r}. {advice} --ckpt_path "
            f"{resume.interrupted_path} keeps this epoch's batches, but Lightning starts the "
            "epoch's data over, so its weights will differ from an uninterrupted run's."
        )

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
