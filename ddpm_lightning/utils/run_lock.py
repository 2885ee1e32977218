"""One run per output folder: a lock file naming its holder, that a dead holder does not keep."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

from ddpm_lightning.errors import UsageError

#: The lock's file name inside the output folder.
LOCK_NAME = ".ddpm-lightning.lock"


class OutputFolderBusyError(UsageError, RuntimeError):
    """Another live run holds the output folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class RunLock:
    """``output_dir/.ddpm-lightning.lock`` holding the holder's pid and host.

    :meth:`acquire` refuses while a live process holds it; a lock left by a process that is
    gone (on this host) is taken over. A lock from another host cannot be checked: it refuses,
    naming the host and pid, and says how to clear it.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.held = False

    def acquire(self) -> None:
        """Take the lock, or raise :class:`OutputFolderBusyError` naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder == me:
                    self.held = True
                    return
                if holder is not None and not self._stale(holder):
                    raise OutputFolderBusyError(
                        f"Another run (pid {holder.get('pid')} on {holder.get('host')}) is "
                        f"writing into {str(self.path.parent)!r}: two runs in one folder would "
                        "overwrite each other's checkpoints and pipeline. Wait for it to finish, "
                        "or choose another --output.output_dir. If that run is gone (e.g. on "
                        f"another machine), delete {str(self.path)!r}."
                    ) from None
                self.path.unlink(missing_ok=True)  # stale or unreadable: take it over
                continue
            with os.fdopen(descriptor, "w") as file:
                json.dump(me, file)
            self.held = True
            return
        raise OutputFolderBusyError(f"Could not take the lock {str(self.path)!r}; try again.")

    def release(self) -> None:
        """Give the lock back (only if this process holds it)."""
        if self.held and self._holder() == {"pid": os.getpid(), "host": socket.gethostname()}:
            self.path.unlink(missing_ok=True)
        self.held = False

    def _holder(self) -> dict | None:
        with contextlib.suppress(OSError, ValueError):
            holder = json.loads(self.path.read_text())
            if isinstance(holder, dict):
                return holder
        return None

    @staticmethod
    def _stale(holder: dict) -> bool:
        if holder.get("host") != socket.gethostname():
            return False
        return not _alive(int(holder.get("pid", -1)))
