"""Key resolvers: from a source string in the environment file to named secrets.

Only ``env:VAR1,VAR2`` exists today; the scheme prefix leaves room for others (files, vaults)
without changing the environment file format.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .errors import MissingKey, UnsupportedKeySource
from .interfaces import KeyResolver
from .secrets import Secret

SUPPORTED_SCHEMES = ("env",)


class EnvKeyResolver:
    """``env:VAR1,VAR2`` → ``{"VAR1": Secret(...), "VAR2": Secret(...)}`` from the process environment."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def resolve(self, source: str) -> dict[str, Secret]:
        scheme, sep, rest = source.partition(":")
        if not sep or scheme.strip() not in SUPPORTED_SCHEMES:
            raise UnsupportedKeySource(
                f"unsupported key source {scheme.strip()!r}"
                f" (expected 'env:VAR1,VAR2'; supported schemes: {', '.join(SUPPORTED_SCHEMES)})"
            )
        names = [n.strip() for n in rest.split(",") if n.strip()]
        if not names:
            raise UnsupportedKeySource("key source 'env:' names no variables (expected 'env:VAR1,VAR2')")
        out: dict[str, Secret] = {}
        for name in names:
            value = self._environ.get(name)
            if value is None:
                raise MissingKey(f"environment variable {name} is not set")
            if value == "":
                raise MissingKey(f"environment variable {name} is set but empty")
            out[name] = Secret(value)
        return out


def resolve_all(keys: list[tuple[str, str]], resolver: KeyResolver | None = None) -> dict[str, Secret]:
    """Resolve every ``(name, source)`` entry; errors name the entry, never a value."""
    resolver = resolver if resolver is not None else EnvKeyResolver()
    merged: dict[str, Secret] = {}
    for index, (name, source) in enumerate(keys):
        try:
            merged.update(resolver.resolve(source))
        except (MissingKey, UnsupportedKeySource) as exc:
            raise type(exc)(f"keys[{index}] ({name!r}): {exc}") from None
    return merged
