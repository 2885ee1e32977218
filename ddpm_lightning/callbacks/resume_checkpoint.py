"""``ResumeCheckpoint``: the ``last.ckpt`` that ``--ckpt_path last`` resumes."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from ddpm_lightning.plugins import remove_checkpoint_temporaries
from ddpm_lightning.private_apis import last_saved_step


class ResumeCheckpoint(ModelCheckpoint):
    """``checkpoints/last.ckpt`` after every epoch, and every N steps within one if asked.

    A resume from an epoch's ``last.ckpt`` is exact; a mid-epoch one starts the epoch's data
    over (close to, not exactly, an uninterrupted run). ``interrupted.ckpt`` (written by
    :class:`~ddpm_lightning.callbacks.InterruptHandler`) is deleted once a later epoch ends.

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
        #: The step of the latest mid-epoch refresh of ``last.ckpt`` (None: none yet).
        self.mid_epoch_step: int | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Delete what checkpoint writes killed midway left in the folder."""
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and trainer.is_global_zero:
            remove_checkpoint_temporaries(self.dirpath)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Refresh ``last.ckpt`` every N steps if asked (the epoch's end saves it anyway)."""
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        every, step = self.every_n_train_steps_last, trainer.global_step
        last_batch = batch_idx + 1 >= trainer.num_training_batches
        if every and step % every == 0 and step not in (0, self.mid_epoch_step) and not last_batch:
            trainer.save_checkpoint(self.last_path)
            self.mid_epoch_step = step  # once per step, also under gradient accumulation

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Save ``last.ckpt``; an earlier stop's ``interrupted.ckpt`` is then out of date."""
        super().on_train_epoch_end(trainer, pl_module)
        if self.saved_at(trainer.global_step):
            trainer.strategy.remove_checkpoint(self.interrupted_path)

    def saved_at(self, step: int) -> bool:
        """Whether ``last.ckpt`` holds the weights of ``step``."""
        return last_saved_step(self) == step

    def resume_advice(self) -> str:
        """What ``--ckpt_path last`` would do now, in words."""
        mid_epoch_last = (self.mid_epoch_step or -1) > (last_saved_step(self) or -1)
        if not os.path.exists(self.last_path):
            return "--ckpt_path last starts over (no epoch has finished yet)."
        if mid_epoch_last:
            return (
                f"--ckpt_path last resumes from step {self.mid_epoch_step} (last.ckpt, "
                "mid-epoch: close to, not exactly, an uninterrupted run)."
            )
        return "--ckpt_path last resumes exactly from the last finished epoch (last.ckpt)."
