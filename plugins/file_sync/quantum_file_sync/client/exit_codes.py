"""Exit statuses scripts can branch on, and the one exception type that carries them."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    """An unexpected internal error (a bug): the message says what happened."""
    USAGE = 2
    """Bad command line (argparse's own status)."""
    SERVER_UNREACHABLE = 3
    AUTH_FAILED = 4
    INVALID_LOCAL_PATH = 5
    MASS_DELETE = 6
    """The mass-delete guard stopped the client; nothing was deleted."""
    INCOMPLETE = 7
    """The pass finished but some paths could not be synced (each was logged)."""
    BAD_SERVER = 8
    """Something answered, but not a file_sync server speaking the expected API."""
    NOT_FOUND = 9
    """History commands: the path, version or trash item does not exist."""
    PARTIAL = 10
    """History commands: not (everything) restored: a target is taken, or the version is
    incomplete (conflicts are listed)."""
    REFUSED = 11
    """History commands: the server refused (writes or history disabled, out of space)."""
    INTERRUPTED = 130


class ClientExit(Exception):
    """Stops the client with ``code``; ``message`` is the one-line reason printed to stderr."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ServerUnreachable(ClientExit):
    def __init__(self, message: str) -> None:
        super().__init__(ExitCode.SERVER_UNREACHABLE, message)


class AuthFailed(ClientExit):
    def __init__(self, message: str) -> None:
        super().__init__(ExitCode.AUTH_FAILED, message)


class InvalidLocalPath(ClientExit):
    def __init__(self, message: str) -> None:
        super().__init__(ExitCode.INVALID_LOCAL_PATH, message)


class MassDeleteTripped(ClientExit):
    def __init__(self, message: str) -> None:
        super().__init__(ExitCode.MASS_DELETE, message)


class BadServer(ClientExit):
    def __init__(self, message: str) -> None:
        super().__init__(ExitCode.BAD_SERVER, message)
