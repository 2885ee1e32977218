"""The ``ddpm-lightning`` entry point: fast --help (no heavy imports), mistakes as one error."""

from __future__ import annotations

import os
import sys

from ddpm_lightning.errors import UsageError, error_chain
from ddpm_lightning.usage import HELP

#: Set to 1 to see the full traceback of a user mistake too.
TRACEBACK_VARIABLE = "DDPM_LIGHTNING_TRACEBACK"


def user_mistake(error: BaseException) -> UsageError | None:
    """The :class:`UsageError` behind ``error`` (jsonargparse wraps ours in its ValueError)."""
    return next((cause for cause in error_chain(error) if isinstance(cause, UsageError)), None)


def main(args: list[str] | None = None) -> None:
    """Run a command; a user mistake prints one "error:" paragraph and exits with status 2."""
    argv = sys.argv[1:] if args is None else list(args)
    if not argv or argv[0] in ("-h", "--help"):  # as argparse: help exits 0, no command 2
        print(HELP, file=sys.stdout if argv else sys.stderr)
        sys.exit(0 if argv else 2)
    try:
        from ddpm_lightning.cli import run

        run(args)  # not returned: the console script would print it and exit 1
    except SystemExit as stop:
        # Lightning stops a fit on SIGTERM with a bare SystemExit (status 0): report the signal.
        if type(stop).__name__ == "SIGTERMException":
            sys.exit(128 + 15)
        raise
    except KeyboardInterrupt as stop:
        # The command said what it kept; the status says which signal stopped it, as a shell's.
        sys.exit(128 + 15 if type(stop).__name__ == "Terminated" else 128 + 2)
    except Exception as error:
        mistake = user_mistake(error)
        if mistake is None or os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0"):
            raise
        print(f"error: {mistake}", file=sys.stderr)
        print(f"(set {TRACEBACK_VARIABLE}=1 to see where it was raised)", file=sys.stderr)
        sys.exit(2)
