"""``OutputFolderLock``: a second fit into the same output folder is refused before any work."""

from __future__ import annotations

import os

from lightning.pytorch import Callback, LightningModule, Trainer

from ddpm_lightning.utils.run_lock import OutputFolderBusyError, RunLock


class OutputFolderLock(Callback):
    """Holds ``output_dir``'s run lock from ``setup`` to ``teardown`` of a fit (rank zero).

    Every rank learns whether the lock was taken, so all stop together when it was not.

    Args:
        output_dir: the run's folder.
    """

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.lock = RunLock(output_dir)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Take the lock before the first checkpoint, grid or export is written."""
        if stage != "fit":
            return
        refusal = None
        if trainer.is_global_zero:
            try:
                self.lock.acquire()
            except OutputFolderBusyError as error:
                refusal = str(error)
        refusal = trainer.strategy.broadcast(refusal)
        if refusal is not None:
            raise OutputFolderBusyError(refusal)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Release the lock when the fit ends, however it ends."""
        if stage == "fit":
            self.lock.release()

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        """Release the lock when the fit stops on an error or a signal (no teardown then)."""
        self.lock.release()
