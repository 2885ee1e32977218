"""Mistakes a user can fix: the command line prints these as one "error:" paragraph."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXTS = tuple(os.strerror(number) for number in _DISK_FULL_ERRNOS)


class UsageError(Exception):
    """A wrong path, value or setting, or an unreachable resource: fixable by the user.

    The ``ddpm-lightning`` command prints the message without a traceback and exits with
    status 2 (``DDPM_LIGHTNING_TRACEBACK=1`` shows the traceback too). Every other exception
    is a bug and keeps its traceback.
    """


class InvalidSettingError(UsageError, ValueError):
    """A setting outside its allowed values; the message names the setting and the range."""


class MissingInputError(UsageError, FileNotFoundError):
    """A file or folder the command needs is not there."""


class OutputExistsError(UsageError, FileExistsError):
    """Writing would replace an earlier run's outputs."""


class OutputLocationError(UsageError, OSError):
    """An output folder is a file, or cannot be created or written."""


class SourceUnavailableError(UsageError, OSError):
    """A model or dataset source (a folder, a Hub id) that cannot be opened or reached."""


class MissingColumnError(UsageError, KeyError):
    """A dataset column that does not exist."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DiskFullError(UsageError, OSError):
    """The disk or quota filled up while writing: ``DiskFullError(errno.ENOSPC, message)``."""

    def __str__(self) -> str:
        return str(self.strerror)


def error_chain(error: BaseException | None) -> Iterator[BaseException]:
    """``error`` and the errors it was raised from (libraries wrap ours in their own)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def is_disk_full(error: BaseException | None) -> bool:
    """True if ``error`` or one it came from says the disk or quota is full.

    By errno or by text: ``torch.save`` wraps the ``OSError`` in a ``RuntimeError``, and
    safetensors raises its own error with "No space left on device (os error 28)" in it.
    """
    return any(
        (isinstance(cause, OSError) and cause.errno in _DISK_FULL_ERRNOS)
        or any(text in str(cause) for text in _DISK_FULL_TEXTS)
        for cause in error_chain(error)
    )
