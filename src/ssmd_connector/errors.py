"""Error types.

Every error carries a message a user can act on: what failed, where, and what to do next.
Messages never include secret values — only the *names* of keys or variables.
"""

from __future__ import annotations


class SsmdError(Exception):
    """Base class; ``str(err)`` is the one-line explanation shown to the user."""


class ConfigError(SsmdError):
    """One or more problems in the configuration files (exit code 2).

    Holds every problem found, so a user fixes a file in one pass instead of one error per run.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class KeySourceError(SsmdError):
    """Base for credential problems; also a configuration error (exit code 2)."""


class UnsupportedKeySource(KeySourceError):
    """A key source whose scheme is not ``env:``."""


class MissingKey(KeySourceError):
    """A variable a key source names is not set (or is empty)."""


class ConnectionFailed(SsmdError):
    """The connection could not be opened (refused, DNS, TLS, timeout, unexpected HTTP status)."""


class AuthenticationFailed(ConnectionFailed):
    """The server rejected our credentials during the handshake (HTTP 401/403)."""


class Disconnected(SsmdError):
    """An open connection ended without us asking for it."""


class WriteFailed(SsmdError):
    """A writer could not persist data; the data is kept and the write retried.

    ``internal`` marks a failure that is not the storage's (a bug): the runner then also reports
    an internal error.
    """

    def __init__(self, message: str, *, internal: bool = False) -> None:
        super().__init__(message)
        self.internal = internal
