"""Choosing and building the connectors a feed asks for."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..config import Environment, Feed
from ..errors import ConfigError
from ..interfaces import Connector
from ..ledger import Ledger
from ..metrics import FeedStats
from ..runner import ConnectorSetup
from ..secrets import Secret
from .websocket import WebSocketConnector

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def interpolate_headers(headers: Mapping[str, str], secrets: Mapping[str, Secret], label: str) -> dict[str, str]:
    """Replace ``${VAR}`` in header values by resolved secrets (named, never shown, in errors)."""
    out: dict[str, str] = {}
    for name, value in headers.items():

        def sub(match: re.Match[str], name: str = name) -> str:
            key = match.group(1)
            if key not in secrets:
                raise ConfigError([f"{label}: headers.{name}: ${{{key}}} is not among the environment's keys"])
            return secrets[key].reveal()

        out[name] = _VAR.sub(sub, value)
    return out


def build_connectors(
    env: Environment, feed: Feed, secrets: Mapping[str, Secret], ledger: Ledger, stats: FeedStats
) -> ConnectorSetup:
    """Validate everything now (config errors surface before start-up) and return the setup
    the runner calls to create the connectors (Kalshi discovers markets there)."""
    version = feed.active_version()
    if feed.connector_kind == "kalshi":
        from .kalshi.connector import KalshiFeed  # noqa: PLC0415 - only Kalshi feeds need it

        return KalshiFeed(env, feed, secrets, ledger, stats).connectors
    headers = interpolate_headers(version.headers, secrets, f"feeds/{feed.name}.yaml")
    connectors: list[Connector] = [WebSocketConnector(version.endpoint, label=feed.name, headers=headers)]

    async def ready() -> list[Connector]:
        return connectors

    return ready
