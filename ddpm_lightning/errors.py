"""Mistakes a user can fix: the command line prints these as one "error:" paragraph."""

from __future__ import annotations


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


class SourceUnavailableError(UsageError, OSError):
    """A model or dataset source (a folder, a Hub id) that cannot be opened or reached."""


class MissingColumnError(UsageError, KeyError):
    """A dataset column that does not exist."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
