"""Exit codes and the one exception type the CLI turns into a one-line error.

Exit codes follow the monitoring-plugin convention (Nagios/Icinga), so `ctguard status` can be a check as it is:
0 OK, 1 WARN (something to act on), 2 CRIT (or: the action failed safely), 3 UNKNOWN (cannot read, bad input),
130 interrupted (SIGINT/SIGTERM).
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    WARN = 1
    CRIT = 2
    UNKNOWN = 3
    INTERRUPTED = 130


class CtguardError(Exception):
    """An error with a one-line message for the user and the exit code to leave with."""

    exit_code: Exit = Exit.UNKNOWN

    def __init__(self, message: str, exit_code: Exit | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class BadInput(CtguardError):
    """The user gave something we cannot use (flag value, file, name)."""


class CannotRead(CtguardError):
    """A kernel or cluster interface could not be read (missing file, unknown format, no permission)."""


class NeedsPrivilege(CannotRead):
    """The reading needs CAP_NET_ADMIN / CAP_SYS_ADMIN (root)."""


class CommandFailed(CtguardError):
    """An external command failed, timed out or is missing; the message carries its stderr."""

    exit_code = Exit.CRIT
