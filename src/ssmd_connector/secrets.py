"""A wrapper that keeps secret values out of logs, reprs, tracebacks and error messages."""

from __future__ import annotations

import re
from typing import Final

_MASK: Final = "********"

SECRET_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
"""``${VAR}`` in a header value: the resolved secret VAR goes there."""
HEADER_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""Characters that may not appear in an HTTP header value (tab is allowed): a secret holding one
could end the header and start another."""


class Secret:
    """A secret string. ``str()``/``repr()`` are masked; call :meth:`reveal` where it is used."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({_MASK!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:  # never pickle a secret by accident
        raise TypeError("Secret values cannot be pickled")
