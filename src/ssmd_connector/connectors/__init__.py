"""Sources of frames. ``build_connectors`` picks the implementation a feed asks for."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..config import Environment, Feed
from ..errors import ConfigError
from ..interfaces import Connector
from ..secrets import Secret
from .websocket import Liveness, WebSocketConnector

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def interpolate_headers(
    headers: Mapping[str, str], secrets: Mapping[str, Secret], label: str
) -> dict[str, str]:
    """Replace ``${VAR}`` in header values by resolved secrets (named, never shown, in errors)."""
    out: dict[str, str] = {}
    for name, value in headers.items():

        def sub(match: re.Match[str], name: str = name) -> str:
            key = match.group(1)
            if key not in secrets:
                raise ConfigError(
                    [f"{label}: headers.{name}: ${{{key}}} is not among the environment's keys"]
                )
            return secrets[key].reveal()

        out[name] = _VAR.sub(sub, value)
    return out


def build_connectors(env: Environment, feed: Feed, secrets: Mapping[str, Secret]) -> list[Connector]:
    version = feed.active_version()
    kind = feed.connector_kind
    if kind == "kalshi":
        raise ConfigError(
            [
                f"feeds/{feed.name}.yaml: connector: the Kalshi connector is not available yet; "
                "set 'connector: websocket' to record the endpoint generically"
            ]
        )
    headers = interpolate_headers(version.headers, secrets, f"feeds/{feed.name}.yaml")
    return [WebSocketConnector(version.endpoint, label=feed.name, headers=headers, liveness=Liveness())]
