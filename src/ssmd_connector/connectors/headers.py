"""Handshake headers: ``${VAR}`` secrets put into them, and nothing that could split a header."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..errors import ConfigError
from ..secrets import HEADER_CONTROL, SECRET_REF, Secret


def interpolate_headers(headers: Mapping[str, str], secrets: Mapping[str, Secret], label: str) -> dict[str, str]:
    """Replace ``${VAR}`` in header values by resolved secrets (named, never shown, in errors).

    A secret with a control character (CR, LF, NUL…) is refused: in a header it would end the
    header and start another one of the secret's choosing."""
    out: dict[str, str] = {}
    for name, value in headers.items():

        def sub(match: re.Match[str], name: str = name) -> str:
            key = match.group(1)
            if key not in secrets:
                raise ConfigError([f"{label}: headers.{name}: ${{{key}}} is not among the environment's keys"])
            revealed = secrets[key].reveal()
            check_header_secret(revealed, key, f"{label}: headers.{name}")
            return revealed

        out[name] = SECRET_REF.sub(sub, value)
    return out


def check_header_secret(value: str, var: str, where: str) -> None:
    """Refuse a resolved secret that cannot safely go into an HTTP header (naming the variable,
    never the value)."""
    if HEADER_CONTROL.search(value):
        raise ConfigError(
            [
                f"{where}: the value of {var} contains a control character (CR, LF, NUL or similar), "
                "which cannot go into an HTTP header; check how the variable is set"
            ]
        )
