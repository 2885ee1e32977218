"""The private names of dependencies this package needs, all here and nowhere else.

Each has no public equivalent. Checked against Lightning 2.6 (``setup.cfg`` bounds it below
2.7); ``tests/test_private_apis.py`` fails with a clear message when a name disappears.
"""

from __future__ import annotations

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, WeightAveraging
from torch.optim.swa_utils import AveragedModel

#: The Lightning version these names were checked against.
CHECKED_LIGHTNING_VERSION = "2.6"


def averaged_model(callback: WeightAveraging) -> AveragedModel | None:
    """The callback's ``AveragedModel`` (created by its ``setup`` for fit; None before)."""
    return getattr(callback, "_average_model", None)


def val_check_time_interval(trainer: Trainer) -> object | None:
    """The Trainer's time-based ``val_check_interval``: ModelCheckpoint then saves later."""
    return getattr(trainer, "_val_check_time_interval", None)


def last_saved_step(callback: ModelCheckpoint) -> int | None:
    """The global step of the callback's latest save (None before its first)."""
    return getattr(callback, "_last_global_step_saved", None)
